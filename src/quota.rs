//! A limit of so many per window, as a governor quota: the whole allowance may be spent at
//! once, and it refills evenly over the window. The payments' per-user and per-IP limits and
//! the consents' per-user limit are made with it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

/// `limit` per `window` (a `limit` of 0 counts as 1; `window` must not be zero).
pub fn per_window(limit: u32, window: Duration) -> Quota {
    let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(window / burst.get())
        .expect("a non-zero window")
        .allow_burst(burst)
}
