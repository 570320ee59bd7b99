//! bankgate's pool over TLS to a real PostgreSQL whose certificate a test CA issued for
//! `localhost`: each `sslmode` checks what libpq's does, and a verifying mode refuses a server
//! it cannot trust.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use bankgate::postgres::{PoolOptions, PrivateCluster, pool};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_postgres::NoTls;

/// A CA and, signed by it, a certificate for `localhost` with its key.
struct Certificates {
    ca: String,
    server: String,
    server_key: String,
}

fn issue(ca_name: &str) -> Certificates {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Certificates {
        ca: ca.pem(),
        server: server.pem(),
        server_key: key.serialize_pem(),
    }
}

/// Writes `contents` to `path`, owned by the data directory's owner and readable by it alone
/// (PostgreSQL refuses a key others can read).
fn write_private(path: &Path, contents: &str, owner: &std::fs::Metadata) {
    std::fs::write(path, contents).unwrap();
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(owner.uid())),
        Some(nix::unistd::Gid::from_raw(owner.gid())),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Turns TLS on in `cluster` with `certificates` (a reload: no restart).
async fn enable_tls(cluster: &PrivateCluster, certificates: &Certificates) {
    let data = cluster.data_dir();
    let owner = std::fs::metadata(data).unwrap();
    write_private(&data.join("server.crt"), &certificates.server, &owner);
    write_private(&data.join("server.key"), &certificates.server_key, &owner);
    let (client, connection) = tokio_postgres::connect(&cluster.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for statement in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
        client.batch_execute(statement).await.unwrap();
    }
    for _ in 0..50 {
        let on: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if on == "on" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ssl stayed off");
}

/// Connects through bankgate's pool; returns whether the session is encrypted.
async fn encrypted(url: &str) -> Result<bool, String> {
    let database =
        pool(url, PoolOptions::new(1, Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let client = database.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn each_sslmode_connects_as_libpq_would_and_verifying_ones_refuse_an_untrusted_server() {
    let cluster = PrivateCluster::start_temporary().await.unwrap();
    let base = cluster.url("postgres");
    // Before TLS: `require` finds no TLS and refuses; `prefer` falls back to plain TCP.
    let url = |host: &str, query: &str| format!("{}?{query}", base.replace("127.0.0.1", host));
    assert!(
        encrypted(&url("localhost", "sslmode=require"))
            .await
            .is_err()
    );
    assert_eq!(
        encrypted(&url("localhost", "sslmode=prefer")).await,
        Ok(false)
    );

    let certificates = issue("bankgate test CA");
    enable_tls(&cluster, &certificates).await;
    let files = tempfile::tempdir().unwrap();
    let trusted = files.path().join("ca.pem");
    std::fs::write(&trusted, &certificates.ca).unwrap();
    let stranger = files.path().join("other-ca.pem");
    std::fs::write(&stranger, issue("another CA").ca).unwrap();
    let root = |path: &Path| format!("sslrootcert={}", path.display());

    for query in [
        "".to_owned(),
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&{}", root(&trusted)),
        format!("sslmode=verify-full&{}", root(&trusted)),
    ] {
        assert_eq!(
            encrypted(&url("localhost", &query)).await,
            Ok(true),
            "{query}"
        );
    }
    assert_eq!(
        encrypted(&url("localhost", "sslmode=disable")).await,
        Ok(false)
    );
    // The certificate names `localhost`: verify-full refuses 127.0.0.1, verify-ca does not.
    let by_address = format!("sslmode=verify-full&{}", root(&trusted));
    assert!(encrypted(&url("127.0.0.1", &by_address)).await.is_err());
    let by_address = format!("sslmode=verify-ca&{}", root(&trusted));
    assert_eq!(encrypted(&url("127.0.0.1", &by_address)).await, Ok(true));
    // Another CA's trust, in either verifying mode or in `require` with a CA named.
    for mode in ["verify-full", "verify-ca", "require"] {
        let query = format!("sslmode={mode}&{}", root(&stranger));
        let refused = encrypted(&url("localhost", &query)).await;
        assert!(refused.is_err(), "{mode}: {refused:?}");
    }
    cluster.stop().await;
}
