//! `warden init`: a starter config, an Ed25519 signing key pair and a data dir.
use std::path::Path;

use anyhow::{Context, bail};

const STARTER: &str = r#"# Warden config. Docs: PRODUCT.md / README.md. Relative paths resolve against this file.
# Check it with: warden config check --config warden.toml

[gateway]
data_dir = "./warden-data"                        # store and signing keys live here
store = "sqlite://./warden-data/evidence.db"
durability = "process"                            # "process" (survives a crash) | "fsync" (survives power loss)

[listeners]
postgres = "127.0.0.1:15432"                      # psql "host=127.0.0.1 port=15432 dbname=<connection> user=agent:<name>"

# [tls]                                           # TLS for client connections (sslmode=require)
# cert_file = "server.crt"
# key_file = "server.key"

# [identity.oidc]                                 # optional; Warden keys always work
# issuer = "https://idp.example.com"
# audience = "warden"
# jwks_file = "jwks.json"
# groups_claim = "groups"

# One [[connections]] per target. The database name a client asks for selects it.
[[connections]]
name = "orders"
protocol = "postgres"
upstream = "127.0.0.1:5432"
database = "orders"
user = "orders_app"
password = "${ORDERS_DB_PASSWORD}"                # secrets come from the environment

# No matching rule means deny; of several matching rules the most restrictive wins.
[[rules]]
id = "agents-read-orders"
principals = ["group:agents"]                     # agent:NAME | user:NAME | group:NAME | "*"
connections = ["orders"]
sql = ["select"]                                  # select insert update delete merge copy ddl dcl transaction set call explain other unparsed
effect = "allow"                                  # allow | deny | approve

[[rules]]
id = "no-ddl-for-agents"
principals = ["group:agents"]
connections = ["*"]
sql = ["ddl", "dcl"]
effect = "deny"
"#;

pub fn init(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg_path = dir.join("warden.toml");
    if cfg_path.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            cfg_path.display()
        );
    }
    let data = dir.join("warden-data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    set_mode(&data, 0o700)?;

    let key_path = data.join("signing.key");
    let pub_path = data.join("signing.pub");
    if !key_path.exists() {
        let seed: [u8; 32] = rand::random();
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        write_private(&key_path, &format!("{}\n", hex::encode(sk.to_bytes())))?;
        std::fs::write(
            &pub_path,
            format!("{}\n", hex::encode(sk.verifying_key().to_bytes())),
        )
        .with_context(|| format!("writing {}", pub_path.display()))?;
        eprintln!(
            "wrote signing key pair {} / {}",
            key_path.display(),
            pub_path.display()
        );
    } else {
        eprintln!("kept existing signing key {}", key_path.display());
    }
    std::fs::write(&cfg_path, STARTER)
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    eprintln!("wrote {}", cfg_path.display());
    eprintln!("next: edit the [[connections]] entry, then");
    eprintln!(
        "  warden keys create --config {} --principal agent:NAME --group agents",
        cfg_path.display()
    );
    eprintln!("  warden serve --config {}", cfg_path.display());
    Ok(())
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn starter_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        super::init(dir.path(), false).unwrap();
        let text = std::fs::read_to_string(dir.path().join("warden.toml")).unwrap();
        let env = |n: &str| (n == "ORDERS_DB_PASSWORD").then(|| "x".to_string());
        let cfg = crate::config::Config::parse_env(
            &text,
            &dir.path().join("warden.toml"),
            dir.path(),
            &env,
        )
        .unwrap();
        assert_eq!(cfg.connections.len(), 1);
        assert!(dir.path().join("warden-data/signing.key").exists());
        assert!(
            super::init(dir.path(), false).is_err(),
            "refuses to overwrite"
        );
    }
}
