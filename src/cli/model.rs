//! `doppel model`: Ed25519 keys for model packages, signing a package and checking one
//! against the keys a node trusts (`keygen|sign|verify`, offline; see
//! `doppel::kernel::model::package`), and a node's model registry and deployments
//! through its gRPC API (`doppel.v1.ModelService`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use doppel::kernel::model::package::{
    PackageFile, Signer, Trust, hex_encode, public_key, signing_key,
};
use doppel::proto::v1::{
    AnnotateRequest, Annotation, AnnotationOutcome, AuditKind, AuditRecord, CanarySpec,
    DecideCanaryRequest, DeployMode as ProtoMode, DeployRequest, DeployResponse,
    GetDivergenceRequest, GetDivergenceResponse, GetPackageRequest, ListAuditRequest,
    ListDeploymentsRequest, ListPackagesRequest, ModelDeployment, ModelPackage, RecommendedCommand,
    RegisterPackageRequest, RegisterPackageResponse, RolloutState, WithdrawRequest,
};
use rand::RngCore as _;

use super::twin::input::{parse_duration, parse_params};
use super::twin::json::Json;
use super::twin::render::{
    clean, divergence_json, duration_text, models_json, models_text, named_json, named_text,
    number_text, shadow_json, time_from_parts, time_json, time_text,
};
use super::twin::session::Session;
use super::twin::table::{Align, Table};
use super::twin::{ConnectArgs, Failure, emit, emit_json};

/// Flags of `doppel model`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel model deploy degradation-1.1.0.toml --type press --to acme/plant-a/line-2 --mode shadow
  doppel model divergence 3
  doppel model deploy degradation@1.1.0 --to press --mode canary --fraction 0.2 --window 10m --max-divergence 5
  doppel model promote 4 --reason \"held for a shift\"
  doppel model withdraw 1 --node edge-b --reason \"line 2 keeps 1.0.0\"   (asking a cloud node)
  doppel model annotate acme/plant-a/line-1/press-3 --alarm anomaly:vibration --outcome false-alarm --note \"sensor knocked\"
  doppel model annotations --json > labels.jsonl

Exit status: 0 when done, 1 when the node could not be reached or refused the call
(an untrusted package, an unknown deployment, a token that is not an admin's), 2 when
the command line is wrong.")]
pub struct ModelArgs {
    /// Where the node is, and how to call it (registry and deployment commands).
    #[command(flatten)]
    connect: ConnectArgs,
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
    /// The node's registry and deployments.
    #[command(flatten)]
    Registry(RegistryCommand),
}

/// The subcommands of `doppel model` that call a node.
#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// Add a package file to the node's registry (admin token).
    Register {
        /// The package file.
        package: PathBuf,
    },
    /// The packages in the node's registry.
    List {
        /// Only this model kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// One package: parameters, what it assumes, units, training window, signer, and
    /// its deployments.
    Show {
        /// KIND@VERSION, e.g. degradation@1.1.0.
        package: String,
    },
    /// Deploy a package to the twins of a type or under a path (admin token). A file
    /// is registered first.
    Deploy(DeployArgs),
    /// Every deployment, with the state of canary rollouts.
    Deployments {
        /// Only deployments in force.
        #[arg(long)]
        active: bool,
    },
    /// How a shadow (or a canary's candidate) differs from production, per twin and
    /// summed.
    Divergence {
        /// The deployment's id.
        deployment: u64,
        /// The node holding the deployment, when asking a cluster node
        /// (`doppel model deployments` names it).
        #[arg(long, value_name = "NODE_ID", default_value = "")]
        node: String,
    },
    /// Take a deployment back: its twins return to what they ran without it.
    Withdraw {
        /// The deployment's id.
        deployment: u64,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// The node holding the deployment, when asking a cluster node
        /// (`doppel model deployments` names it).
        #[arg(long, value_name = "NODE_ID", default_value = "")]
        node: String,
    },
    /// Promote a canary to production on every twin its deployment selects.
    Promote(DecideArgs),
    /// Annotate the outcome of an alarm, a safety action or a recommendation of a twin
    /// (operator token): confirmed, a false alarm, or a comment; audited, a label for
    /// the models concerned.
    Annotate(AnnotateArgs),
    /// Every annotation at or below a path, oldest first, as labels for retraining:
    /// the twin, what was annotated, the outcome, the note, who, when, and the models
    /// concerned with their versions.
    Annotations {
        /// Only twins at or below this path.
        #[arg(long)]
        prefix: Option<String>,
        /// Only annotations made since (90s, 10m, 1h, 7d).
        #[arg(long)]
        since: Option<String>,
    },
    /// Roll a canary back.
    Rollback(DecideArgs),
}

/// `doppel model deploy`.
#[derive(Args, Debug)]
struct DeployArgs {
    /// A package file, or KIND@VERSION of a registered package.
    package: String,
    /// The twins: a twin type (`press`), or a path prefix (`acme/plant-a/line-2`; a
    /// one-segment prefix ends with `/`).
    #[arg(
        long,
        value_name = "TYPE|PREFIX",
        required_unless_present = "twin_type"
    )]
    to: Option<String>,
    /// Only twins of this type (with `--to`: of this type under that prefix).
    #[arg(long = "type", value_name = "TYPE")]
    twin_type: Option<String>,
    /// shadow, canary or production.
    #[arg(long)]
    mode: String,
    /// The model it replaces or shadows, when the twins have more than one of its kind.
    #[arg(long)]
    model: Option<String>,
    /// Canary: the fraction of the selected twins that run it, in (0, 1].
    #[arg(long, default_value = "0.1")]
    fraction: f64,
    /// Canary: at most this many canary twins per line.
    #[arg(long, default_value = "1")]
    per_line: u32,
    /// Canary: how long every criterion must hold (90s, 10m, 1h).
    #[arg(long, default_value = "10m")]
    window: String,
    /// Canary: largest mean |candidate - replaced| on any output.
    #[arg(long)]
    max_divergence: Option<f64>,
    /// Canary: most alarms the candidate may raise beyond the model it replaced.
    #[arg(long, default_value = "0")]
    max_alarm_increase: u64,
    /// Canary: promote by itself once the window passes (else wait for `promote`).
    #[arg(long)]
    auto_promote: bool,
    /// Shadow: how long (of samples) it must run beside production on each twin to
    /// count as evaluated; declare at least one production cycle (8h, 1d).
    #[arg(long, value_name = "DURATION")]
    evaluate: Option<String>,
}

/// `doppel model promote|rollback`.
#[derive(Args, Debug)]
struct DecideArgs {
    /// The canary's deployment id.
    deployment: u64,
    /// Why (recorded).
    #[arg(long)]
    reason: String,
    /// The node holding the deployment, when asking a cluster node
    /// (`doppel model deployments` names it).
    #[arg(long, value_name = "NODE_ID", default_value = "")]
    node: String,
}

impl DecideArgs {
    /// The request that promotes (or rolls back) the canary.
    fn request(self, promote: bool) -> DecideCanaryRequest {
        DecideCanaryRequest {
            deployment: self.deployment,
            promote,
            reason: self.reason,
            node_id: self.node,
        }
    }
}

/// `doppel model annotate`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["alarm", "safety_action", "recommendation"])))]
struct AnnotateArgs {
    /// The twin's asset path.
    asset: String,
    /// The alarm, by code (`doppel twin get` lists them).
    #[arg(long, value_name = "CODE")]
    alarm: Option<String>,
    /// The safety action, by its audit record's sequence number (`doppel twin audit`).
    #[arg(long, value_name = "SEQ")]
    safety_action: Option<u64>,
    /// The recommended command, by name, with its `--param`s as recommended.
    #[arg(long, value_name = "COMMAND")]
    recommendation: Option<String>,
    /// A recommended command's parameter, NAME=VALUE; repeat for more.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// confirmed, false-alarm or comment.
    #[arg(long)]
    outcome: String,
    /// Free text (required for a comment).
    #[arg(long, default_value = "")]
    note: String,
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

/// The time of an optional `google.protobuf.Timestamp` field.
macro_rules! time_of {
    ($field:expr) => {
        $field.as_ref().map(|t| time_from_parts(t.seconds, t.nanos))
    };
}

/// `KIND@VERSION`.
fn kind_version(text: &str) -> Result<(String, String), Failure> {
    match text.split_once('@') {
        Some((kind, version)) if !kind.is_empty() && !version.is_empty() => {
            Ok((kind.to_string(), version.to_string()))
        }
        _ => Err(Failure::usage(format!(
            "`{text}`: name a package as KIND@VERSION (e.g. degradation@1.1.0) or give its file"
        ))),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}

/// Runs `doppel model`.
pub async fn run(args: ModelArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        ModelCommand::Registry(command) => Ok(online(command, &args.connect).await?),
        ModelCommand::Keygen(args) => keygen(args),
        ModelCommand::Sign(args) => sign(args),
        ModelCommand::Verify(args) => verify(args),
    }
}

/// The commands that call a node.
async fn online(command: RegistryCommand, connect: &ConnectArgs) -> Result<(), Failure> {
    let target = connect.target()?;
    let json = connect.json;
    let session = Session::connect(&target).await?;
    match command {
        RegistryCommand::Register { package } => {
            let text = read(&package).map_err(Failure::failed)?;
            let registered = register(&session, text).await?;
            let package = registered.package.unwrap_or_default();
            if json {
                emit_json(&package_json(&package))?;
            } else {
                let verb = if registered.new {
                    "registered"
                } else {
                    "already registered:"
                };
                emit(&format!("{verb} {} {}\n", package.kind, package.version))?;
            }
        }
        RegistryCommand::List { kind } => {
            let request = ListPackagesRequest {
                kind: kind.unwrap_or_default(),
            };
            let listed = session
                .model_unary(request, |mut c, r| async move { c.list_packages(r).await })
                .await
                .map_err(|status| Failure::rpc("model list", &status))?;
            if json {
                for package in &listed.packages {
                    emit_json(&package_json(package))?;
                }
            } else {
                emit(&packages_text(&listed.packages))?;
            }
        }
        RegistryCommand::Show { package } => {
            let (kind, version) = kind_version(&package)?;
            let request = GetPackageRequest { kind, version };
            let shown = session
                .model_unary(request, |mut c, r| async move { c.get_package(r).await })
                .await
                .map_err(|status| Failure::rpc(format!("model show {package}"), &status))?;
            let registered = shown.package.unwrap_or_default();
            if json {
                emit_json(&package_json(&registered).with(
                    "deployments",
                    Json::Array(shown.deployments.iter().map(deployment_json).collect()),
                ))?;
            } else {
                emit(&package_text(&registered, &shown.deployments))?;
            }
            if !shown.unavailable.is_empty() {
                return Err(Failure::failed(format!(
                    "node(s) {} did not answer: their deployments are not listed",
                    shown.unavailable.join(", ")
                )));
            }
        }
        RegistryCommand::Deploy(args) => {
            let (kind, version) = if Path::new(&args.package).is_file() {
                let text = read(Path::new(&args.package)).map_err(Failure::failed)?;
                let package = register(&session, text).await?.package.unwrap_or_default();
                (package.kind, package.version)
            } else {
                kind_version(&args.package)?
            };
            let mode = match args.mode.as_str() {
                "shadow" => ProtoMode::Shadow,
                "canary" => ProtoMode::Canary,
                "production" => ProtoMode::Production,
                other => {
                    return Err(Failure::usage(format!(
                        "--mode `{other}`: shadow, canary or production"
                    )));
                }
            };
            let canary = (mode == ProtoMode::Canary)
                .then(|| -> Result<CanarySpec, Failure> {
                    Ok(CanarySpec {
                        fraction: args.fraction,
                        per_line: args.per_line,
                        min_duration_secs: parse_duration("--window", &args.window)?.as_secs_f64(),
                        max_divergence: args.max_divergence,
                        max_alarm_increase: Some(args.max_alarm_increase),
                        auto_promote: args.auto_promote,
                    })
                })
                .transpose()?;
            let (twin_type, path_prefix) = match (args.twin_type, args.to.as_deref()) {
                (Some(twin_type), to) => (
                    twin_type,
                    to.unwrap_or_default().trim_end_matches('/').to_string(),
                ),
                (None, Some(to)) if to.contains('/') => {
                    (String::new(), to.trim_end_matches('/').to_string())
                }
                (None, to) => (to.unwrap_or_default().to_string(), String::new()),
            };
            let request = DeployRequest {
                kind: kind.clone(),
                version: version.clone(),
                twin_type,
                path_prefix,
                mode: mode as i32,
                model: args.model.unwrap_or_default(),
                canary,
                evaluation_secs: args
                    .evaluate
                    .as_deref()
                    .map(|text| parse_duration("--evaluate", text).map(|d| d.as_secs_f64()))
                    .transpose()?,
            };
            let what = format!("model deploy {kind}@{version}");
            let deployed = session
                .model_unary(request, |mut c, r| async move { c.deploy(r).await })
                .await
                .map_err(|status| Failure::rpc(what, &status))?;
            show_step(&deployed, json)?;
        }
        RegistryCommand::Deployments { active } => {
            let request = ListDeploymentsRequest {
                active_only: active,
            };
            let listed = session
                .model_unary(
                    request,
                    |mut c, r| async move { c.list_deployments(r).await },
                )
                .await
                .map_err(|status| Failure::rpc("model deployments", &status))?;
            if json {
                for deployment in &listed.deployments {
                    emit_json(&deployment_json(deployment))?;
                }
            } else {
                emit(&deployments_text(&listed.deployments))?;
            }
            if !listed.unavailable.is_empty() {
                return Err(Failure::failed(format!(
                    "node(s) {} did not answer: their deployments are not listed",
                    listed.unavailable.join(", ")
                )));
            }
        }
        RegistryCommand::Divergence {
            deployment,
            node: node_id,
        } => {
            let request = GetDivergenceRequest {
                deployment,
                node_id,
            };
            let divergence = session
                .model_unary(request, |mut c, r| async move { c.get_divergence(r).await })
                .await
                .map_err(|status| {
                    Failure::rpc(format!("model divergence {deployment}"), &status)
                })?;
            if json {
                emit_json(&divergence_response_json(&divergence))?;
            } else {
                emit(&divergence_text(&divergence))?;
            }
        }
        RegistryCommand::Withdraw {
            deployment,
            reason,
            node: node_id,
        } => {
            let request = WithdrawRequest {
                deployment,
                reason,
                node_id,
            };
            let withdrawn = session
                .model_unary(request, |mut c, r| async move { c.withdraw(r).await })
                .await
                .map_err(|status| Failure::rpc(format!("model withdraw {deployment}"), &status))?;
            show_step(&withdrawn, json)?;
        }
        RegistryCommand::Annotate(args) => annotate(&session, args, json).await?,
        RegistryCommand::Annotations { prefix, since } => {
            annotations(&session, prefix, since, json).await?;
        }
        RegistryCommand::Promote(args) => decide(&session, args.request(true), json).await?,
        RegistryCommand::Rollback(args) => decide(&session, args.request(false), json).await?,
    }
    Ok(())
}

/// `doppel model keygen`.
fn keygen(args: KeygenArgs) -> Result<(), Box<dyn std::error::Error>> {
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

/// `doppel model sign`.
fn sign(args: SignArgs) -> Result<(), Box<dyn std::error::Error>> {
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

/// `doppel model verify`.
fn verify(args: VerifyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut trust = Trust::default();
    for path in &args.trusted {
        trust.keys.push(
            public_key(&read(path)?).map_err(|error| format!("{}: {error}", path.display()))?,
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

/// Registers a package file's text with the node.
async fn register(session: &Session, text: String) -> Result<RegisterPackageResponse, Failure> {
    let request = RegisterPackageRequest { package: text };
    session
        .model_unary(
            request,
            |mut c, r| async move { c.register_package(r).await },
        )
        .await
        .map_err(|status| Failure::rpc("model register", &status))
}

/// `doppel model annotate`.
async fn annotate(session: &Session, args: AnnotateArgs, json: bool) -> Result<(), Failure> {
    use doppel::proto::v1::annotation::Subject;
    let outcome = match args.outcome.as_str() {
        "confirmed" => AnnotationOutcome::Confirmed,
        "false-alarm" | "false_alarm" => AnnotationOutcome::FalseAlarm,
        "comment" => AnnotationOutcome::Comment,
        other => {
            return Err(Failure::usage(format!(
                "--outcome `{other}`: confirmed, false-alarm or comment"
            )));
        }
    };
    let subject = match (args.alarm, args.safety_action, args.recommendation) {
        (Some(code), _, _) => Subject::AlarmCode(code),
        (_, Some(seq), _) => Subject::SafetyActionSeq(seq),
        (_, _, Some(command)) => Subject::Recommendation(RecommendedCommand {
            command,
            params: parse_params(&args.params)?,
        }),
        _ => {
            return Err(Failure::usage(
                "name --alarm, --safety-action or --recommendation",
            ));
        }
    };
    if !args.params.is_empty() && !matches!(subject, Subject::Recommendation(_)) {
        return Err(Failure::usage("--param goes with --recommendation"));
    }
    let request = AnnotateRequest {
        asset_path: args.asset.clone(),
        annotation: Some(Annotation {
            subject: Some(subject),
            outcome: outcome as i32,
            note: args.note,
        }),
    };
    let annotated = session
        .model_unary(request, |mut c, r| async move { c.annotate(r).await })
        .await
        .map_err(|status| Failure::rpc(format!("model annotate {}", args.asset), &status))?;
    let record = annotated.record.unwrap_or_default();
    if json {
        emit_json(&label_json(&record))
    } else {
        emit(&format!(
            "annotated {} as audit record {}: {}\n",
            clean(&record.asset_path),
            record.seq,
            clean(&label_text(&record))
        ))
    }
}

/// `doppel model annotations`: every page of ListAudit's annotation records.
async fn annotations(
    session: &Session,
    prefix: Option<String>,
    since: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let mut request = ListAuditRequest {
        path_prefix: prefix.unwrap_or_default(),
        page_size: 1000,
        kinds: vec![AuditKind::Annotation as i32],
        ..Default::default()
    };
    if let Some(since) = since {
        let ago = parse_duration("--since", &since)?;
        let from = std::time::SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(std::time::UNIX_EPOCH);
        request.from = Some(from.into());
    }
    let mut table = Table::new(&[
        ("AT", Align::Left),
        ("TWIN", Align::Left),
        ("BY", Align::Left),
        ("LABEL", Align::Left),
        ("MODELS", Align::Left),
    ]);
    let mut count = 0usize;
    loop {
        let page = session
            .unary(
                request.clone(),
                |mut c, r| async move { c.list_audit(r).await },
            )
            .await
            .map_err(|status| Failure::rpc("model annotations", &status))?;
        for record in &page.records {
            count += 1;
            if json {
                emit_json(&label_json(record))?;
            } else {
                table.row(vec![
                    time_text(time_of!(record.at)),
                    clean(&record.asset_path),
                    clean(
                        &record
                            .origin
                            .as_ref()
                            .map(|o| o.principal.clone())
                            .unwrap_or_default(),
                    ),
                    clean(&label_text(record)),
                    models_text(&record.models),
                ]);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    if json {
        Ok(())
    } else if count == 0 {
        emit("no annotations\n")
    } else {
        emit(&table.render())
    }
}

fn outcome_word(raw: i32) -> &'static str {
    match AnnotationOutcome::try_from(raw) {
        Ok(AnnotationOutcome::Confirmed) => "confirmed",
        Ok(AnnotationOutcome::FalseAlarm) => "false_alarm",
        Ok(AnnotationOutcome::Comment) => "comment",
        _ => "unknown",
    }
}

/// What an annotation record says, in words: `false_alarm on alarm anomaly:vibration: note`.
fn label_text(record: &AuditRecord) -> String {
    use doppel::proto::v1::annotation::Subject;
    let Some(annotation) = &record.annotation else {
        return record.reason.clone();
    };
    let subject = match &annotation.subject {
        Some(Subject::AlarmCode(code)) => format!("alarm {code}"),
        Some(Subject::SafetyActionSeq(seq)) => format!("safety action {seq}"),
        Some(Subject::Recommendation(r)) => {
            format!("recommendation {} {}", r.command, named_text(&r.params))
        }
        None => "unknown".to_string(),
    };
    let outcome = outcome_word(annotation.outcome);
    if annotation.note.is_empty() {
        format!("{outcome} on {subject}")
    } else {
        format!("{outcome} on {subject}: {}", annotation.note)
    }
}

/// One annotation as a label record: flat, one JSON object per line.
fn label_json(record: &AuditRecord) -> Json {
    use doppel::proto::v1::annotation::Subject;
    let annotation = record.annotation.clone().unwrap_or_default();
    let (subject, reference, command) = match &annotation.subject {
        Some(Subject::AlarmCode(code)) => ("alarm", Json::from(code.as_str()), Json::Null),
        Some(Subject::SafetyActionSeq(seq)) => ("safety_action", Json::from(*seq), Json::Null),
        Some(Subject::Recommendation(r)) => (
            "recommendation",
            Json::from(r.command.as_str()),
            Json::object()
                .with("command", &r.command)
                .with("params", named_json(&r.params)),
        ),
        None => ("unknown", Json::Null, Json::Null),
    };
    Json::object()
        .with("asset_path", &record.asset_path)
        .with("at", time_json(time_of!(record.at)))
        .with("audit_seq", record.seq)
        .with("subject", subject)
        .with("ref", reference)
        .with("recommendation", command)
        .with("command_id", &record.command_id)
        .with("outcome", outcome_word(annotation.outcome))
        .with("note", &annotation.note)
        .with(
            "by",
            record
                .origin
                .as_ref()
                .map_or(Json::Null, |o| Json::from(o.principal.as_str())),
        )
        .with("models", models_json(&record.models))
        .with("state_version", record.state_version)
}

/// Promotes or rolls back a canary.
async fn decide(
    session: &Session,
    request: DecideCanaryRequest,
    json: bool,
) -> Result<(), Failure> {
    let deployment = request.deployment;
    let verb = if request.promote {
        "promote"
    } else {
        "rollback"
    };
    let decided = session
        .model_unary(request, |mut c, r| async move { c.decide_canary(r).await })
        .await
        .map_err(|status| Failure::rpc(format!("model {verb} {deployment}"), &status))?;
    show_step(&decided, json)
}

/// What a deployment step did, twin by twin (and in a cluster, node by node). Fails
/// (exit status 1) after printing when a node refused it or could not be reached.
fn show_step(step: &DeployResponse, json: bool) -> Result<(), Failure> {
    let refused: Vec<String> = (step.nodes.iter())
        .filter(|n| !n.error.is_empty())
        .map(|n| format!("{}: {}", clean(&n.node_id), clean(&n.error)))
        .collect();
    let shown = show_step_only(step, json);
    match refused.is_empty() {
        true => shown,
        false => shown.and(Err(Failure::failed(format!(
            "not deployed on every node: {}",
            refused.join("; ")
        )))),
    }
}

fn show_step_only(step: &DeployResponse, json: bool) -> Result<(), Failure> {
    if json {
        let paths =
            |paths: &[String]| Json::Array(paths.iter().map(|p| Json::from(p.as_str())).collect());
        return emit_json(
            &Json::object()
                .with(
                    "deployment",
                    step.deployment.as_ref().map_or(Json::Null, deployment_json),
                )
                .with(
                    "nodes",
                    Json::Array(
                        (step.nodes.iter())
                            .map(|n| {
                                Json::object()
                                    .with("node_id", &n.node_id)
                                    .with(
                                        "deployment",
                                        n.deployment.as_ref().map_or(Json::Null, deployment_json),
                                    )
                                    .with("applied", u64::from(n.applied))
                                    .with("error", &n.error)
                            })
                            .collect(),
                    ),
                )
                .with("applied", paths(&step.applied))
                .with("unchanged", paths(&step.unchanged))
                .with("parked", paths(&step.parked))
                .with(
                    "failed",
                    Json::Array(
                        step.failed
                            .iter()
                            .map(|f| {
                                Json::object()
                                    .with("asset_path", &f.asset_path)
                                    .with("reason", &f.reason)
                            })
                            .collect(),
                    ),
                ),
        );
    }
    let mut out = String::new();
    if let Some(deployment) = &step.deployment {
        out.push_str(&deployment_line(deployment));
    }
    for node in &step.nodes {
        match &node.deployment {
            Some(deployment) => out.push_str(&deployment_line(deployment)),
            None => out.push_str(&format!(
                "node {}: not deployed: {}\n",
                clean(&node.node_id),
                clean(&node.error)
            )),
        }
    }
    out.push_str(&format!(
        "  {} twin(s) changed, {} already ran it, {} passivated (they run it when they wake), {} failed\n",
        step.applied.len(),
        step.unchanged.len(),
        step.parked.len(),
        step.failed.len()
    ));
    for failure in &step.failed {
        out.push_str(&format!(
            "  failed: {}: {}\n",
            clean(&failure.asset_path),
            clean(&failure.reason)
        ));
    }
    emit(&out)
}

fn mode_word(raw: i32) -> &'static str {
    match ProtoMode::try_from(raw) {
        Ok(ProtoMode::Shadow) => "shadow",
        Ok(ProtoMode::Canary) => "canary",
        Ok(ProtoMode::Production) => "production",
        _ => "unknown",
    }
}

fn rollout_word(raw: i32) -> &'static str {
    match RolloutState::try_from(raw) {
        Ok(RolloutState::Running) => "running",
        Ok(RolloutState::Held) => "held",
        Ok(RolloutState::Promoted) => "promoted",
        Ok(RolloutState::RolledBack) => "rolled back",
        _ => "unknown",
    }
}

/// One line on a deployment: id, node, package, mode, target, model and state.
fn deployment_line(deployment: &ModelDeployment) -> String {
    format!(
        "deployment {}{}: {}@{} as {} of {} ({}): {}\n",
        deployment.id,
        node_text(deployment),
        clean(&deployment.kind),
        clean(&deployment.version),
        mode_word(deployment.mode),
        target_text(deployment),
        clean(&deployment.model),
        state_text(deployment),
    )
}

/// ` on NODE` for a deployment a cluster node names the holder of.
fn node_text(deployment: &ModelDeployment) -> String {
    if deployment.node_id.is_empty() {
        String::new()
    } else {
        format!(" on {}", clean(&deployment.node_id))
    }
}

fn target_text(deployment: &ModelDeployment) -> String {
    if deployment.twin_type.is_empty() {
        clean(&deployment.path_prefix)
    } else {
        format!("type {}", clean(&deployment.twin_type))
    }
}

/// In force, withdrawn (why), or a canary's rollout state.
fn state_text(deployment: &ModelDeployment) -> String {
    match (&deployment.rollout, deployment.active) {
        (Some(rollout), _) if !rollout.reason.is_empty() => {
            format!(
                "canary {}: {}",
                rollout_word(rollout.state),
                clean(&rollout.reason)
            )
        }
        (Some(rollout), _) => format!(
            "canary {} on {} twin(s)",
            rollout_word(rollout.state),
            rollout.twins.len()
        ),
        (None, true) => "in force".to_string(),
        (None, false) => format!("withdrawn ({})", clean(&deployment.withdrawn)),
    }
}

fn package_json(package: &ModelPackage) -> Json {
    Json::object()
        .with("kind", &package.kind)
        .with("version", &package.version)
        .with(
            "compatible_with",
            Json::Array(
                package
                    .compatible_with
                    .iter()
                    .map(|v| Json::from(v.as_str()))
                    .collect(),
            ),
        )
        .with("params_json", &package.params_json)
        .with(
            "assumptions",
            Json::Array(
                package
                    .assumptions
                    .iter()
                    .map(|a| Json::from(a.as_str()))
                    .collect(),
            ),
        )
        .with(
            "units",
            package
                .units
                .iter()
                .fold(Json::object(), |units, (name, unit)| units.with(name, unit)),
        )
        .with("training_from", &package.training_from)
        .with("training_to", &package.training_to)
        .with("author", &package.author)
        .with("created", &package.created)
        .with("signer", &package.signer)
        .with("registered_at", time_json(time_of!(package.registered_at)))
        .with("registered_by", &package.registered_by)
}

fn deployment_json(deployment: &ModelDeployment) -> Json {
    let mut json = Json::object()
        .with("id", deployment.id)
        .with("kind", &deployment.kind)
        .with("version", &deployment.version)
        .with("model", &deployment.model)
        .with("twin_type", &deployment.twin_type)
        .with("path_prefix", &deployment.path_prefix)
        .with("mode", mode_word(deployment.mode))
        .with("by", &deployment.by)
        .with("at", time_json(time_of!(deployment.at)))
        .with("active", deployment.active)
        .with("withdrawn", &deployment.withdrawn)
        .with("node_id", &deployment.node_id)
        .with("evaluation_secs", deployment.evaluation_secs);
    if let Some(rollout) = &deployment.rollout {
        json = json.with(
            "rollout",
            Json::object()
                .with("state", rollout_word(rollout.state))
                .with(
                    "twins",
                    Json::Array(
                        rollout
                            .twins
                            .iter()
                            .map(|t| Json::from(t.as_str()))
                            .collect(),
                    ),
                )
                .with("reason", &rollout.reason)
                .with("promoted_to", rollout.promoted_to)
                .with("divergence", divergence_json(rollout.divergence.as_ref())),
        );
    }
    json
}

fn packages_text(packages: &[ModelPackage]) -> String {
    if packages.is_empty() {
        return "no packages registered\n".to_string();
    }
    let mut table = Table::new(&[
        ("KIND", Align::Left),
        ("VERSION", Align::Left),
        ("AUTHOR", Align::Left),
        ("SIGNED BY", Align::Left),
        ("REGISTERED", Align::Left),
    ]);
    for package in packages {
        table.row(vec![
            clean(&package.kind),
            clean(&package.version),
            clean(&package.author),
            if package.signer.is_empty() {
                "unsigned".to_string()
            } else {
                format!("{}…", &package.signer[..package.signer.len().min(16)])
            },
            time_text(time_of!(package.registered_at)),
        ]);
    }
    table.render()
}

fn package_text(package: &ModelPackage, deployments: &[ModelDeployment]) -> String {
    let mut out = format!("{} {}\n", clean(&package.kind), clean(&package.version));
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("  {label:<17}{value}\n"));
        }
    };
    line("parameters", clean(&package.params_json));
    line(
        "compatible with",
        clean(&package.compatible_with.join(", ")),
    );
    line("assumes", clean(&package.assumptions.join("; ")));
    let units: Vec<String> = package
        .units
        .iter()
        .map(|(name, unit)| format!("{name} in {unit}"))
        .collect();
    line("units", clean(&units.join(", ")));
    if !package.training_from.is_empty() {
        line(
            "trained on",
            format!(
                "{} to {}",
                clean(&package.training_from),
                clean(&package.training_to)
            ),
        );
    }
    line(
        "author",
        format!("{} ({})", clean(&package.author), clean(&package.created)),
    );
    line(
        "signed by",
        if package.signer.is_empty() {
            "nobody (accepted unsigned)".to_string()
        } else {
            clean(&package.signer)
        },
    );
    line(
        "registered",
        format!(
            "{} by {}",
            time_text(time_of!(package.registered_at)),
            clean(&package.registered_by)
        ),
    );
    if !deployments.is_empty() {
        out.push('\n');
        out.push_str(&deployments_text(deployments));
    }
    out
}

fn deployments_text(deployments: &[ModelDeployment]) -> String {
    if deployments.is_empty() {
        return "no deployments\n".to_string();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("NODE", Align::Left),
        ("PACKAGE", Align::Left),
        ("MODE", Align::Left),
        ("TO", Align::Left),
        ("BY", Align::Left),
        ("AT", Align::Left),
        ("STATE", Align::Left),
    ]);
    for deployment in deployments {
        table.row(vec![
            deployment.id.to_string(),
            match deployment.node_id.as_str() {
                "" => "-".to_string(),
                node => clean(node),
            },
            format!("{}@{}", clean(&deployment.kind), clean(&deployment.version)),
            mode_word(deployment.mode).to_string(),
            target_text(deployment),
            clean(&deployment.by),
            time_text(time_of!(deployment.at)),
            state_text(deployment),
        ]);
    }
    table.render()
}

fn divergence_response_json(response: &GetDivergenceResponse) -> Json {
    Json::object()
        .with(
            "deployment",
            response
                .deployment
                .as_ref()
                .map_or(Json::Null, deployment_json),
        )
        .with("fleet", divergence_json(response.fleet.as_ref()))
        .with(
            "twins",
            Json::Array(
                response
                    .twins
                    .iter()
                    .map(|twin| {
                        Json::object().with("asset_path", &twin.asset_path).with(
                            "shadow",
                            twin.shadow.as_ref().map_or(Json::Null, shadow_json),
                        )
                    })
                    .collect(),
            ),
        )
        .with("evaluated_twins", u64::from(response.evaluated_twins))
        .with("evaluated", response.evaluated)
        .with(
            "unavailable",
            Json::Array(
                response
                    .unavailable
                    .iter()
                    .map(|p| Json::from(p.as_str()))
                    .collect(),
            ),
        )
}

fn divergence_text(response: &GetDivergenceResponse) -> String {
    let mut out = String::new();
    if let Some(deployment) = &response.deployment {
        out.push_str(&deployment_line(deployment));
    }
    if let Some(deployment) = &response.deployment
        && deployment.evaluation_secs > 0.0
    {
        let window = std::time::Duration::from_secs_f64(deployment.evaluation_secs);
        out.push_str(&format!(
            "  evaluation window {}: {} of {} twin(s) covered it{}\n",
            duration_text(window),
            response.evaluated_twins,
            response.twins.len(),
            if response.evaluated {
                " (evaluated)"
            } else {
                " (still evaluating)"
            }
        ));
    }
    let Some(fleet) = &response.fleet else {
        return out;
    };
    out.push_str(&format!(
        "  over {} twin(s), {} sample(s): {} alarm(s) only the shadow raised, {} only production raised, {} safety action(s) informed only by production\n",
        fleet.twins,
        fleet.samples,
        fleet.shadow_only_alarms,
        fleet.production_only_alarms,
        fleet.informed_safety_actions
    ));
    let mut table = Table::new(&[
        ("TWIN", Align::Left),
        ("OUTPUT", Align::Left),
        ("COMPARED", Align::Right),
        ("MEAN |Δ|", Align::Right),
        ("MAX |Δ|", Align::Right),
    ]);
    for output in &fleet.outputs {
        table.row(vec![
            "(all)".to_string(),
            clean(&output.name),
            output.compared.to_string(),
            number_text(output.mean_abs),
            number_text(output.max_abs),
        ]);
    }
    for twin in &response.twins {
        let Some(divergence) = twin.shadow.as_ref().and_then(|s| s.divergence.as_ref()) else {
            continue;
        };
        for output in &divergence.outputs {
            table.row(vec![
                clean(&twin.asset_path),
                clean(&output.name),
                output.compared.to_string(),
                number_text(output.mean_abs),
                number_text(output.max_abs),
            ]);
        }
    }
    out.push_str(&table.render());
    for path in &response.unavailable {
        out.push_str(&format!("  unavailable: {}\n", clean(path)));
    }
    out
}
