//! `doppel types import-dtdl FILE…` and `doppel types export-dtdl TYPES_TOML`: twin
//! types from DTDL v3 Interfaces, and back. The result goes to stdout; what has no
//! equivalent on the other side, or was assumed for want of it, to stderr, one line
//! each.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use doppel::config::dtdl::{self, Gap, Unmapped};

/// Flags of `doppel types`.
#[derive(Args, Debug)]
pub struct TypesArgs {
    /// What to do.
    #[command(subcommand)]
    command: TypesCommand,
}

/// The subcommands of `doppel types`.
#[derive(Subcommand, Debug)]
enum TypesCommand {
    /// Read DTDL v3 Interfaces (JSON files of one Interface or an array of them) and
    /// print the twin types they describe as types.toml.
    ImportDtdl(ImportArgs),
    /// Print the twin types of a types.toml as a JSON array of DTDL v3 Interfaces.
    ExportDtdl(ExportArgs),
}

/// `doppel types import-dtdl`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel types import-dtdl thermostat.json temperature_controller.json > types.toml
  doppel types import-dtdl models/*.json > types.toml 2> dtdl-report.txt

Every Interface that no other one extends or holds as a Component becomes a twin
type; Components become prefixed names (thermostat1_temperature). Each line on stderr
names an element that has no equivalent in twin types (left out), or a default taken
for what DTDL does not say (assumed): plausible ranges, bounds, initial values.")]
struct ImportArgs {
    /// The DTDL documents; `extends` and Components may refer from one to another.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// `doppel types export-dtdl`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel types export-dtdl types.toml --namespace dtmi:com:acme:presses > interfaces.json

Each twin type becomes the Interface <namespace>:<type>;1. Each line on stderr names
what DTDL cannot say: ranges, models, governors, what a command sets, …")]
struct ExportArgs {
    /// The twin types file.
    #[arg(value_name = "TYPES_TOML")]
    types: PathBuf,
    /// The DTMI the Interfaces are named under, without version: your organisation's
    /// reversed domain name and what follows it.
    #[arg(long, value_name = "DTMI", default_value = "dtmi:com:example")]
    namespace: String,
}

/// Runs `doppel types …`.
pub async fn run(args: TypesArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        TypesCommand::ImportDtdl(import) => import_dtdl(&import),
        TypesCommand::ExportDtdl(export) => export_dtdl(&export),
    }
}

fn import_dtdl(args: &ImportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let documents = args
        .files
        .iter()
        .map(|path| read(path).map(|text| (path.display().to_string(), text)))
        .collect::<Result<Vec<_>, _>>()?;
    let imported = dtdl::import(&documents)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(imported.toml.as_bytes())?;
    stdout.flush()?;
    for made in &imported.types {
        eprintln!("type {} from {}", made.name, made.interface);
    }
    for hint in &imported.relationships {
        eprintln!("topology hint: {hint}");
    }
    print_report(&imported.report);
    Ok(())
}

fn export_dtdl(args: &ExportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = read(&args.types)?;
    let origin = args.types.display().to_string();
    let exported = dtdl::export(&text, &origin, &args.namespace)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", exported.json())?;
    stdout.flush()?;
    print_report(&exported.report);
    Ok(())
}

/// Reads a file, naming it when it cannot.
fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The report on stderr: one line per entry, then the counts.
fn print_report(report: &[Unmapped]) {
    for entry in report {
        eprintln!("{entry}");
    }
    let left_out = report
        .iter()
        .filter(|entry| entry.gap == Gap::LeftOut)
        .count();
    let assumed = report.len() - left_out;
    eprintln!("{left_out} left out, {assumed} assumed");
}
