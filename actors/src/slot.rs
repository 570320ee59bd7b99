//! Where a handle finds its actor: the supervisor puts the current `ActorRef` here when it
//! starts or restarts the actor, so handles survive restarts.

use std::sync::{Arc, RwLock};

use ractor::ActorRef;

pub struct Slot<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<M> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().expect("slot lock").clone()
    }

    pub fn set(&self, actor: ActorRef<M>) {
        *self.0.write().expect("slot lock") = Some(actor);
    }
}
