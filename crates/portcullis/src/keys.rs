//! `portcullis keys generate` (SPEC §1): a new private key and its public JWKS,
//! ready for `token mint --key` and a provider's `jwks_file`.

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use portcullis_identity::jose::Alg;
use portcullis_identity::keys;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `portcullis keys generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Signature algorithm of the new key.
    #[arg(long, value_enum, ignore_case = true, default_value = "ES256")]
    alg: KeyAlg,
    /// Directory to write `private.pem` and `jwks.json` into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// The algorithms a key can be generated for.
#[derive(Clone, Copy, ValueEnum)]
enum KeyAlg {
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256")]
    Es256,
    /// ECDSA P-384 with SHA-384.
    #[value(name = "ES384")]
    Es384,
    /// RSA 2048 PKCS#1 v1.5 with SHA-256.
    #[value(name = "RS256")]
    Rs256,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
}

impl KeyAlg {
    fn alg(self) -> Alg {
        match self {
            KeyAlg::Es256 => Alg::ES256,
            KeyAlg::Es384 => Alg::ES384,
            KeyAlg::Rs256 => Alg::RS256,
            KeyAlg::EdDsa => Alg::EdDSA,
        }
    }
}

/// `keys generate`: refuses to overwrite either file, so a key that is in use can
/// never be replaced by accident.
pub fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let private = args.out.join("private.pem");
    let jwks = args.out.join("jwks.json");
    for path in [&private, &jwks] {
        // symlink_metadata: a dangling symlink also counts as "exists".
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; refusing to overwrite it (remove it or choose another --out)",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create directory {}", args.out.display()))?;
    let alg = args.alg.alg();
    let key = keys::generate(alg).context("cannot generate the key")?;
    let jwks_text = serde_json::to_string_pretty(&serde_json::json!({ "keys": [key.public_jwk] }))
        .context("cannot encode the JWKS")?;
    write_new(&private, key.pkcs8_pem.as_bytes(), true)?;
    if let Err(e) = write_new(&jwks, format!("{jwks_text}\n").as_bytes(), false) {
        // Half a key pair is worse than none: the next run would refuse to overwrite it.
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    crate::cli::out(&format!(
        "wrote {} ({alg} private key, PKCS#8, mode 0600)\nwrote {} (public JWKS, kid {})\n",
        private.display(),
        jwks.display(),
        key.kid
    ));
    Ok(ExitCode::SUCCESS)
}

/// Creates `path`, failing if it exists (also a symlink: `create_new` never follows
/// one). A secret file is created with mode 0600 from the start, never chmod-ed
/// after being readable.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).with_context(|| {
        if path.symlink_metadata().is_ok() {
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            )
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
