//! `doppel model keygen|sign|verify`: Ed25519 keys for model packages, signing a
//! package, and checking one against the keys a node trusts (see
//! `doppel::kernel::model::package`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use doppel::kernel::model::package::{
    PackageFile, Signer, Trust, hex_encode, public_key, signing_key,
};
use rand::RngCore as _;

/// Flags of `doppel model`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    command: ModelCommand,
}

/// The subcommands of `doppel model`.
#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Make a signing key (FILE, readable by its owner only) and its public key
    /// (FILE.pub, for a node's trusted keys).
    Keygen(KeygenArgs),
    /// Sign a model package with a key: writes the package with its [signature].
    Sign(SignArgs),
    /// Check a package's signature against trusted public keys.
    Verify(VerifyArgs),
}

/// `doppel model keygen`.
#[derive(Args, Debug)]
struct KeygenArgs {
    /// The signing key's file; an existing file is kept.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// `doppel model sign`.
#[derive(Args, Debug)]
#[command(after_help = "\
Example:
  doppel model keygen --out models.key
  doppel model sign degradation-1.1.0.toml --key models.key
  doppel model verify degradation-1.1.0.toml --trust models.key.pub")]
struct SignArgs {
    /// The package file.
    package: PathBuf,
    /// The signing key (from `doppel model keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Where to write the signed package [default: over the package file].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `doppel model verify`.
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 when the package is signed by a trusted key and unchanged since, 1 when
it is unsigned, changed, signed by another key or not a package.")]
struct VerifyArgs {
    /// The package file.
    package: PathBuf,
    /// A trusted public key file (FILE.pub from `doppel model keygen`); repeat for more.
    #[arg(long = "trust", value_name = "FILE", required = true)]
    trusted: Vec<PathBuf>,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}

/// Runs `doppel model`.
pub async fn run(args: ModelArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        ModelCommand::Keygen(args) => {
            if args.out.exists() {
                return Err(format!("{} exists; it was kept", args.out.display()).into());
            }
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let key = signing_key(&hex_encode(&seed))?;
            let public = hex_encode(key.verifying_key().as_bytes());
            super::cluster::write(&args.out, &format!("{}\n", hex_encode(&seed)), true)?;
            let public_path = PathBuf::from(format!("{}.pub", args.out.display()));
            super::cluster::write(&public_path, &format!("{public}\n"), false)?;
            println!(
                "made {} (keep it secret) and {} (public key {public})",
                args.out.display(),
                public_path.display()
            );
            Ok(())
        }
        ModelCommand::Sign(args) => {
            let key = signing_key(&read(&args.key)?)
                .map_err(|error| format!("{}: {error}", args.key.display()))?;
            let file = PackageFile::parse(&read(&args.package)?)
                .map_err(|error| format!("{}: {error}", args.package.display()))?;
            let out = args.out.unwrap_or(args.package);
            super::cluster::write(&out, &file.sign(&key), false)?;
            let package = file.package();
            println!(
                "signed {} {} with key {} into {}",
                package.kind,
                package.version,
                hex_encode(key.verifying_key().as_bytes()),
                out.display()
            );
            Ok(())
        }
        ModelCommand::Verify(args) => {
            let mut trust = Trust::default();
            for path in &args.trusted {
                trust.keys.push(
                    public_key(&read(path)?)
                        .map_err(|error| format!("{}: {error}", path.display()))?,
                );
            }
            let file = PackageFile::parse(&read(&args.package)?)
                .map_err(|error| format!("{}: {error}", args.package.display()))?;
            match file.verify(&trust) {
                Ok(Signer::Key(key)) => {
                    let package = file.package();
                    println!(
                        "{} {}: signed by trusted key {key}, unchanged since",
                        package.kind, package.version
                    );
                    Ok(())
                }
                Ok(Signer::Unsigned) => Err("unsigned".into()),
                Err(error) => Err(format!("{}: {error}", args.package.display()).into()),
            }
        }
    }
}
