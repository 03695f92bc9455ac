//! `doppel twin`: read, watch, command and question the twins of any node through its
//! gRPC API (`doppel.v1.TwinService`).
//!
//! Output is aligned text for people, or with `--json` one JSON object per line for
//! scripts: `get`, `command` and `simulate` print one object; `list`, `history`,
//! `audit` and `watch` print one object per twin, sample, record or event, as they
//! arrive (an empty result prints nothing).
//!
//! Exit status: 0 when the node answered, a denied command included (the verdict is
//! the answer, not a failure); 1 when the node refused or failed the call, or could not
//! be reached; 2 when the command line is wrong and nothing was sent. Failures print
//! one line on stderr: `doppel: <what failed>: <why>`.

/// Sets an optional `google.protobuf.Timestamp` field of a request, whose prost type
/// this crate does not name, to a [`doppel::kernel::Timestamp`].
macro_rules! set_time {
    ($field:expr, $time:expr) => {{
        let micros = doppel::kernel::Timestamp::as_micros($time);
        let slot = $field.insert(Default::default());
        slot.seconds = micros.div_euclid(1_000_000);
        slot.nanos = i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0);
    }};
}

/// Sets an optional `google.protobuf.Duration` field of a request to a
/// [`std::time::Duration`].
macro_rules! set_duration {
    ($field:expr, $duration:expr) => {{
        let duration: std::time::Duration = $duration;
        let slot = $field.insert(Default::default());
        slot.seconds = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        slot.nanos = i32::try_from(duration.subsec_nanos()).unwrap_or(0);
    }};
}

mod failure;
pub(crate) mod input;
pub(crate) mod json;
pub(crate) mod render;
pub(crate) mod session;
pub(crate) mod table;

use std::error::Error;
use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use doppel::kernel::Timestamp;
use doppel::proto::v1::{
    GetHistoryRequest, GetTwinRequest, ListAuditRequest, ListTwinsRequest, RecommendRequest,
    SendCommandRequest, SimulateRequest, Twin, WatchTwinsRequest, watch_twins_response,
};

use failure::EXIT_FAILED;
pub use failure::Failure;
use input::{TimeRange, parse_params, parse_positive_duration};
use json::Json;
use session::{Session, Target};

/// The address used when neither `--addr` nor `DOPPEL_ADDR` names one: `doppel dev`'s.
const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// Longest accepted idempotency key, in characters (the API's limit).
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// Flags of `doppel twin`, shared by its subcommands.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel twin list acme/plant-a --type press
  doppel twin get acme/plant-a/line-1/press-3
  doppel twin command acme/plant-a/line-1/press-3 set_speed rpm=1200
  doppel twin simulate acme/plant-a/line-1/press-3 set_speed rpm=2000 --horizon 10m
  doppel twin history acme/plant-a/line-1/press-3 temperature --since 1h
  doppel twin --json audit acme/plant-a --since 1d

Exit status: 0 when the node answered (a denied command included: the verdict is
the answer), 1 when the node refused or failed the call or could not be reached,
2 when the command line is wrong and nothing was sent.")]
pub struct TwinArgs {
    /// Where the node is, and how to call it.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    command: TwinCommand,
}

/// How to reach a node's gRPC API: shared by `doppel twin` and `doppel node status`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The node's gRPC address: http://HOST:PORT, or https://HOST:PORT for TLS
    /// (a bare HOST:PORT means http://).
    #[arg(long, global = true, env = "DOPPEL_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    addr: String,
    /// Bearer token sent with every call (`doppel dev` prints one).
    #[arg(
        long,
        global = true,
        env = "DOPPEL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// CA certificates (PEM) to trust for an https:// address, instead of the
    /// system's bundle (or SSL_CERT_FILE).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print JSON for scripts: one object per line (lists: one per item).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on connecting, and on any call, after this long (30, 30s, 2m); a watch
    /// runs on once it started.
    #[arg(long, global = true, value_name = "SECS", default_value = "10")]
    timeout: String,
}

impl ConnectArgs {
    /// The node these flags name; a usage failure when `--timeout` is not a duration.
    pub fn target(&self) -> Result<Target, Failure> {
        Ok(Target {
            addr: self.addr.clone(),
            token: self.token.clone(),
            ca: self.ca.clone(),
            timeout: parse_positive_duration("--timeout", &self.timeout)?,
        })
    }
}

/// The subcommands of `doppel twin`.
#[derive(Subcommand, Debug)]
enum TwinCommand {
    /// List twins under a path prefix: path, type, state, health, alarms, version.
    List(ListArgs),
    /// Show one twin: reported, desired and derived values, alarms, trips, models.
    Get(GetArgs),
    /// Show the twins under a prefix, then every change as it happens, until Ctrl-C.
    Watch(WatchArgs),
    /// Send a command and print the governors' verdict: accepted, clamped (with the
    /// values applied) or denied (with the governor's reason).
    Command(CommandArgs),
    /// Ask what a command would do: the verdict it would get and the models'
    /// projection. Changes and actuates nothing.
    Simulate(SimulateArgs),
    /// The next best action: candidate commands (the twin type's grid, or
    /// `--command/--param/--values`) projected and ranked against the type's objective,
    /// with bounds, the governors' verdicts and why. Changes and actuates nothing.
    Recommend(RecommendArgs),
    /// Print a channel's samples in a time range, oldest first.
    History(HistoryArgs),
    /// Print the audit log (commands and safety actions), oldest first.
    Audit(AuditArgs),
}

/// `doppel twin list`.
#[derive(Args, Debug)]
struct ListArgs {
    /// Only twins at or below this path (`acme/plant-a`); none: all.
    prefix: Option<String>,
    /// Only twins of this type.
    #[arg(long = "type", value_name = "TYPE")]
    twin_type: Option<String>,
    /// Twins per page (1-1000) [default: the node's, 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    page_size: Option<i32>,
    /// Start at this page (a token a previous listing printed).
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow the pages to the end instead of printing the first.
    #[arg(long)]
    all: bool,
}

/// `doppel twin get`.
#[derive(Args, Debug)]
struct GetArgs {
    /// The twin's asset path (`acme/plant-a/line-1/press-3`).
    path: String,
}

/// `doppel twin watch`.
#[derive(Args, Debug)]
struct WatchArgs {
    /// Only twins at or below this path; none: all.
    prefix: Option<String>,
    /// Stop after this long and exit 0 (90s, 10m), instead of waiting for Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
}

/// `doppel twin command`.
#[derive(Args, Debug)]
struct CommandArgs {
    /// The twin's asset path.
    path: String,
    /// The command, as the twin type declares it (`set_speed`, `stop`, `reset`).
    name: String,
    /// Parameters as NAME=VALUE; a value is true, false, an integer or a number.
    #[arg(value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Makes retrying safe: the twin runs a key it has seen only once and answers a
    /// retry with the first outcome (1-128 characters).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Refuse the command (DEADLINE_EXCEEDED, never actuated) if it reaches the twin
    /// later than this many seconds from now (5, 2.5, 1m).
    #[arg(long, value_name = "SECS")]
    deadline_secs: Option<String>,
}

/// `doppel twin simulate`.
#[derive(Args, Debug)]
struct SimulateArgs {
    /// The twin's asset path.
    path: String,
    /// The hypothetical command.
    name: String,
    /// Parameters as NAME=VALUE.
    #[arg(value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// How far to project (1s to 24h) [default: the node's, 10m].
    #[arg(long, value_name = "DURATION")]
    horizon: Option<String>,
    /// Time between projected points [default: the node's, horizon / 60].
    #[arg(long, value_name = "DURATION")]
    step: Option<String>,
}

/// `doppel twin recommend`.
#[derive(Args, Debug)]
struct RecommendArgs {
    /// The twin's asset path.
    path: String,
    /// The command the candidates are [default: the twin type's].
    #[arg(long, requires_all = ["param", "values"])]
    command: Option<String>,
    /// Its numeric parameter the candidates differ in.
    #[arg(long, requires = "command")]
    param: Option<String>,
    /// The values to try, comma-separated (600,900,1200).
    #[arg(long, requires = "command", value_delimiter = ',')]
    values: Vec<f64>,
}

/// `doppel twin history`.
#[derive(Args, Debug)]
struct HistoryArgs {
    /// The twin's asset path.
    path: String,
    /// The channel (`temperature`).
    channel: String,
    /// Only samples of this recent past (90s, 10m, 1h, 2d).
    #[arg(long, value_name = "DURATION", conflicts_with = "from")]
    since: Option<String>,
    /// Only samples at or after this time (RFC 3339: 2026-11-21T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only samples at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// At most this many samples, the newest (1-10000) [default: the node's, 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=10_000))]
    limit: Option<i32>,
}

/// `doppel twin audit`.
#[derive(Args, Debug)]
struct AuditArgs {
    /// Only records of twins at or below this path; none: all.
    prefix: Option<String>,
    /// Only records of this recent past (90s, 10m, 1h, 2d).
    #[arg(long, value_name = "DURATION", conflicts_with = "from")]
    since: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Records per page (1-1000) [default: the node's, 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    page_size: Option<i32>,
    /// Start at this page (a token a previous listing printed).
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow the pages to the end instead of printing the first.
    #[arg(long)]
    all: bool,
}

/// Runs one `doppel twin` subcommand. A failure comes back as a [`Failure`], whose
/// exit code [`exit_code`] finds.
pub async fn run(args: TwinArgs) -> Result<(), Box<dyn Error>> {
    match execute(args).await {
        Ok(()) => Ok(()),
        // `doppel twin watch | head`: the reader has what it wanted.
        Err(failure) if failure.is_output_closed() => Ok(()),
        Err(failure) => Err(failure.into()),
    }
}

/// The exit code for an error `run` returned: a [`Failure`]'s own, else 1.
pub fn exit_code(error: &(dyn Error + 'static)) -> u8 {
    error
        .downcast_ref::<Failure>()
        .map_or(EXIT_FAILED, Failure::exit_code)
}

/// Checks the shared flags and runs the subcommand.
async fn execute(args: TwinArgs) -> Result<(), Failure> {
    let target = args.connect.target()?;
    let json = args.connect.json;
    match args.command {
        TwinCommand::List(list) => list_twins(&target, json, list).await,
        TwinCommand::Get(get) => get_twin(&target, json, get).await,
        TwinCommand::Watch(watch) => watch_twins(&target, json, watch).await,
        TwinCommand::Command(command) => send_command(&target, json, command).await,
        TwinCommand::Simulate(simulate) => simulate_command(&target, json, simulate).await,
        TwinCommand::Recommend(recommend) => recommend_command(&target, json, recommend).await,
        TwinCommand::History(history) => get_history(&target, json, history).await,
        TwinCommand::Audit(audit) => list_audit(&target, json, audit).await,
    }
}

/// `doppel twin list`.
async fn list_twins(target: &Target, json: bool, args: ListArgs) -> Result<(), Failure> {
    let mut request = ListTwinsRequest {
        path_prefix: args.prefix.unwrap_or_default(),
        twin_type: args.twin_type.unwrap_or_default(),
        page_size: args.page_size.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    };
    let session = Session::connect(target).await?;
    let mut listed = Vec::new();
    loop {
        let page = session
            .unary(request.clone(), |mut client, request| async move {
                client.list_twins(request).await
            })
            .await
            .map_err(|status| Failure::rpc("list twins", &status))?;
        if json {
            for twin in &page.twins {
                emit_json(&render::twin_summary_json(twin))?;
            }
        } else {
            listed.extend(page.twins);
        }
        if !next_page(
            &mut request.page_token,
            page.next_page_token,
            args.all,
            "twins",
        )? {
            break;
        }
    }
    if !json {
        if listed.is_empty() {
            emit("no twins\n")?;
        } else {
            emit(&render::twins_table(&listed))?;
        }
    }
    Ok(())
}

/// Moves `token` to the next page and says whether to fetch it: only with `--all`,
/// else a note on stderr tells how to get the rest.
fn next_page(token: &mut String, next: String, all: bool, items: &str) -> Result<bool, Failure> {
    if next.is_empty() {
        return Ok(false);
    }
    if !all {
        note(&format!(
            "more {items} follow: add --all, or --page-token {next}"
        ));
        return Ok(false);
    }
    if next == *token {
        return Err(Failure::failed(format!(
            "the node sent the page token `{next}` twice; stopping"
        )));
    }
    *token = next;
    Ok(true)
}

/// `doppel twin get`.
async fn get_twin(target: &Target, json: bool, args: GetArgs) -> Result<(), Failure> {
    let what = format!("get {}", args.path);
    let request = GetTwinRequest {
        asset_path: args.path,
    };
    let session = Session::connect(target).await?;
    let response = session
        .unary(request, |mut client, request| async move {
            client.get_twin(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    let Some(twin) = response.twin else {
        return Err(Failure::failed(format!(
            "{what}: the node answered without a twin"
        )));
    };
    if json {
        emit_json(&render::twin_json(&twin))
    } else {
        emit(&render::twin_text(&twin))
    }
}

/// `doppel twin watch`.
async fn watch_twins(target: &Target, json: bool, args: WatchArgs) -> Result<(), Failure> {
    let stop_after = args
        .duration
        .as_deref()
        .map(|text| parse_positive_duration("--duration", text))
        .transpose()?;
    let what = match &args.prefix {
        Some(prefix) => format!("watch {prefix}"),
        None => "watch".to_string(),
    };
    let request = WatchTwinsRequest {
        path_prefix: args.prefix.unwrap_or_default(),
    };
    let session = Session::connect(target).await?;
    let mut stream = session
        .stream(request, |mut client, request| async move {
            client.watch_twins(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stop = async {
        match stop_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let mut snapshot: Vec<Twin> = Vec::new();
    let mut path_width = 0;
    loop {
        let message = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = &mut stop => return Ok(()),
            message = stream.message() => message,
        };
        let event = match message {
            Ok(Some(message)) => message.event,
            Ok(None) => {
                return Err(Failure::failed(format!("{what}: the node ended the watch")));
            }
            Err(status) => return Err(Failure::rpc(&what, &status)),
        };
        match event {
            Some(watch_twins_response::Event::Snapshot(twin)) => {
                if json {
                    emit_json(
                        &Json::object()
                            .with("event", "snapshot")
                            .with("twin", render::twin_json(&twin)),
                    )?;
                } else {
                    path_width = path_width.max(twin.asset_path.chars().count());
                    snapshot.push(twin);
                }
            }
            Some(watch_twins_response::Event::SnapshotComplete(complete)) => {
                if json {
                    emit_json(
                        &Json::object()
                            .with("event", "snapshot_complete")
                            .with("twins", complete.twins),
                    )?;
                } else {
                    let summaries: Vec<_> = snapshot.iter().map(render::summary_of).collect();
                    if !summaries.is_empty() {
                        emit(&render::twins_table(&summaries))?;
                    }
                    let noun = if complete.twins == 1 { "twin" } else { "twins" };
                    emit(&format!(
                        "-- {} {noun}; changes follow (Ctrl-C to stop)\n",
                        complete.twins
                    ))?;
                    snapshot.clear();
                }
            }
            Some(watch_twins_response::Event::Change(change)) => {
                if json {
                    emit_json(&render::change_json(&change))?;
                } else {
                    emit(&format!(
                        "{}\n",
                        render::change_line(&change, Timestamp::now(), path_width)
                    ))?;
                }
            }
            Some(watch_twins_response::Event::Coalesced(twin)) => {
                if json {
                    emit_json(
                        &Json::object()
                            .with("event", "coalesced")
                            .with("twin", render::twin_json(&twin)),
                    )?;
                } else {
                    emit(&format!(
                        "{}  v{}  state now (changes in between coalesced)\n",
                        twin.asset_path, twin.version
                    ))?;
                }
            }
            // An event of a newer API: nothing this CLI can show.
            None => {}
        }
    }
}

/// `doppel twin command`.
async fn send_command(target: &Target, json: bool, args: CommandArgs) -> Result<(), Failure> {
    let params = parse_params(&args.params)?;
    if let Some(key) = &args.idempotency_key {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(Failure::usage(format!(
                "--idempotency-key: {chars} characters; use 1 to {MAX_IDEMPOTENCY_KEY_CHARS}"
            )));
        }
    }
    let deadline = args
        .deadline_secs
        .as_deref()
        .map(|text| parse_positive_duration("--deadline-secs", text))
        .transpose()?;
    let what = format!("command {} on {}", args.name, args.path);
    let mut request = SendCommandRequest {
        asset_path: args.path,
        command: args.name,
        params,
        idempotency_key: args.idempotency_key.unwrap_or_default(),
        deadline: None,
    };
    let session = Session::connect(target).await?;
    if let Some(deadline) = deadline {
        // Taken after connecting, so the deadline counts from when the command leaves.
        set_time!(request.deadline, Timestamp::now().plus(deadline));
    }
    let response = session
        .unary(request, |mut client, request| async move {
            client.send_command(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    if json {
        emit_json(&render::command_json(&response))
    } else {
        emit(&render::command_text(&response))
    }
}

/// `doppel twin simulate`.
async fn simulate_command(target: &Target, json: bool, args: SimulateArgs) -> Result<(), Failure> {
    let params = parse_params(&args.params)?;
    let mut request = SimulateRequest {
        asset_path: args.path,
        command: args.name,
        params,
        horizon: None,
        step: None,
    };
    if let Some(horizon) = &args.horizon {
        set_duration!(
            request.horizon,
            parse_positive_duration("--horizon", horizon)?
        );
    }
    if let Some(step) = &args.step {
        set_duration!(request.step, parse_positive_duration("--step", step)?);
    }
    let what = format!("simulate {} on {}", request.command, request.asset_path);
    let session = Session::connect(target).await?;
    let response = session
        .unary(request, |mut client, request| async move {
            client.simulate(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    if json {
        emit_json(&render::simulation_json(&response))
    } else {
        emit(&render::simulation_text(&response))
    }
}

/// `doppel twin recommend`.
async fn recommend_command(
    target: &Target,
    json: bool,
    args: RecommendArgs,
) -> Result<(), Failure> {
    let request = RecommendRequest {
        asset_path: args.path,
        command: args.command.unwrap_or_default(),
        param: args.param.unwrap_or_default(),
        values: args.values,
    };
    let what = format!("recommend for {}", request.asset_path);
    let session = Session::connect(target).await?;
    let response = session
        .unary(request, |mut client, request| async move {
            client.recommend(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    if json {
        for candidate in &response.candidates {
            emit_json(&render::candidate_json(candidate))?;
        }
        Ok(())
    } else {
        emit(&render::recommendation_text(&response))
    }
}

/// `doppel twin history`.
async fn get_history(target: &Target, json: bool, args: HistoryArgs) -> Result<(), Failure> {
    let range = TimeRange::from_flags(
        args.since.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        Timestamp::now(),
    )?;
    let what = format!("history of {} {}", args.path, args.channel);
    let mut request = GetHistoryRequest {
        asset_path: args.path,
        channel: args.channel,
        from: None,
        to: None,
        limit: args.limit.unwrap_or(0),
    };
    if let Some(from) = range.from {
        set_time!(request.from, from);
    }
    if let Some(to) = range.to {
        set_time!(request.to, to);
    }
    let session = Session::connect(target).await?;
    let response = session
        .unary(request, |mut client, request| async move {
            client.get_history(request).await
        })
        .await
        .map_err(|status| Failure::rpc(&what, &status))?;
    if json {
        for sample in &response.samples {
            emit_json(&render::sample_json(sample))?;
        }
        Ok(())
    } else if response.samples.is_empty() {
        emit("no samples\n")
    } else {
        emit(&render::samples_table(&response.samples))
    }
}

/// `doppel twin audit`.
async fn list_audit(target: &Target, json: bool, args: AuditArgs) -> Result<(), Failure> {
    let range = TimeRange::from_flags(
        args.since.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        Timestamp::now(),
    )?;
    let mut request = ListAuditRequest {
        path_prefix: args.prefix.unwrap_or_default(),
        from: None,
        to: None,
        page_size: args.page_size.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
        kinds: Vec::new(),
    };
    if let Some(from) = range.from {
        set_time!(request.from, from);
    }
    if let Some(to) = range.to {
        set_time!(request.to, to);
    }
    let session = Session::connect(target).await?;
    let mut listed = Vec::new();
    loop {
        let page = session
            .unary(request.clone(), |mut client, request| async move {
                client.list_audit(request).await
            })
            .await
            .map_err(|status| Failure::rpc("audit", &status))?;
        if json {
            for record in &page.records {
                emit_json(&render::audit_json(record))?;
            }
        } else {
            listed.extend(page.records);
        }
        if !next_page(
            &mut request.page_token,
            page.next_page_token,
            args.all,
            "records",
        )? {
            break;
        }
    }
    if !json {
        if listed.is_empty() {
            emit("no audit records\n")?;
        } else {
            emit(&render::audit_table(&listed))?;
        }
    }
    Ok(())
}

/// Writes `text` to stdout and flushes it, so a reader sees every line as it comes.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                Failure::output_closed()
            } else {
                Failure::other("writing to stdout", &error)
            }
        })
}

/// Writes one JSON value as one line.
pub(crate) fn emit_json(value: &Json) -> Result<(), Failure> {
    emit(&format!("{value}\n"))
}

/// A remark on stderr that is not a failure (`doppel: more twins follow: …`).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "doppel: {text}");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The `twin` part of the command line, as the binary nests it.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand, Debug)]
    enum Top {
        Twin(TwinArgs),
    }

    fn parse(args: &[&str]) -> Result<TwinArgs, clap::Error> {
        let Top::Twin(args) =
            Cli::try_parse_from(std::iter::once("doppel").chain(args.iter().copied()))?.command;
        Ok(args)
    }

    #[test]
    fn the_command_line_parses_with_flags_anywhere() {
        let args = parse(&[
            "twin",
            "command",
            "acme/plant-a/line-1/press-3",
            "set_speed",
            "rpm=1200",
            "--json",
            "--addr",
            "http://127.0.0.1:1",
            "--idempotency-key",
            "k1",
        ])
        .unwrap();
        assert!(args.connect.json);
        assert_eq!(args.connect.addr, "http://127.0.0.1:1");
        let TwinCommand::Command(command) = args.command else {
            panic!("not a command: {:?}", args.command);
        };
        assert_eq!(command.path, "acme/plant-a/line-1/press-3");
        assert_eq!(command.name, "set_speed");
        assert_eq!(command.params, vec!["rpm=1200".to_string()]);
        assert_eq!(command.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(
            parse_positive_duration("--timeout", &args.connect.timeout).unwrap(),
            std::time::Duration::from_secs(10)
        );
    }

    #[test]
    fn clap_refuses_what_it_can_check() {
        for bad in [
            &["twin"][..],
            &["twin", "get"],
            &["twin", "list", "--page-size", "0"],
            &["twin", "list", "--page-size", "-5"],
            &["twin", "history", "a/b", "temperature", "--limit", "100000"],
            &[
                "twin",
                "history",
                "a/b",
                "t",
                "--since",
                "1h",
                "--from",
                "2026-01-01T00:00:00Z",
            ],
            &[
                "twin",
                "audit",
                "--since",
                "1h",
                "--from",
                "2026-01-01T00:00:00Z",
            ],
            &["twin", "frobnicate"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_input_is_a_usage_error_before_anything_is_sent() {
        // Port 9 (discard) on loopback: nothing listens, and nothing must be tried.
        let cases: &[(&[&str], &str)] = &[
            (
                &["twin", "command", "a/b", "set_speed", "rpm"],
                "bad parameter `rpm`: expected NAME=VALUE",
            ),
            (
                &["twin", "command", "a/b", "set_speed", "rpm=fast"],
                "`fast` is not true, false",
            ),
            (
                &["twin", "command", "a/b", "stop", "--idempotency-key", ""],
                "--idempotency-key: 0 characters",
            ),
            (
                &["twin", "command", "a/b", "stop", "--deadline-secs", "soon"],
                "--deadline-secs `soon`",
            ),
            (
                &[
                    "twin",
                    "simulate",
                    "a/b",
                    "set_speed",
                    "--horizon",
                    "10 minutes",
                ],
                "--horizon `10 minutes`",
            ),
            (
                &["twin", "history", "a/b", "t", "--since=-1h"],
                "--since `-1h`",
            ),
            (
                &["twin", "audit", "--from", "yesterday"],
                "--from `yesterday`",
            ),
            (&["twin", "get", "a/b", "--timeout", "0"], "--timeout `0`"),
            (
                &["twin", "watch", "--duration", "forever"],
                "--duration `forever`",
            ),
            (
                &["twin", "get", "a/b", "--addr", "ftp://x:1"],
                "--addr `ftp://x:1`",
            ),
            (
                &["twin", "get", "a/b", "--addr", "http://"],
                "--addr `http://`",
            ),
            (
                &[
                    "twin",
                    "get",
                    "a/b",
                    "--addr",
                    "http://127.0.0.1:9",
                    "--ca",
                    "/x",
                ],
                "--ca: only used with an https:// address",
            ),
            (
                &[
                    "twin",
                    "get",
                    "a/b",
                    "--addr",
                    "http://127.0.0.1:9",
                    "--token",
                    "tök",
                ],
                "--token: only printable ASCII",
            ),
        ];
        for (argv, says) in cases {
            let mut args = parse(argv).unwrap();
            if !argv.contains(&"--addr") {
                args.connect.addr = "http://127.0.0.1:9".to_string();
            }
            let failure = execute(args).await.unwrap_err();
            assert_eq!(failure.exit_code(), 2, "{argv:?}: {failure}");
            assert!(failure.to_string().contains(says), "{argv:?}: {failure}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_node_is_a_one_line_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let args = parse(&["twin", "get", "a/b", "--addr", &format!("127.0.0.1:{port}")]).unwrap();
        let failure = execute(args).await.unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_FAILED, "{failure}");
        let text = failure.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to http://127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[tokio::test]
    async fn a_silent_node_is_given_up_on_after_the_timeout() {
        // The kernel completes the TCP handshake; nothing ever answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let args = parse(&["twin", "get", "a/b", "--addr", &addr, "--timeout", "300ms"]).unwrap();
        let started = std::time::Instant::now();
        let failure = execute(args).await.unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(failure.exit_code(), EXIT_FAILED, "{failure}");
        assert!(failure.to_string().contains("within 300ms"), "{failure}");
        drop(listener);
    }

    #[test]
    fn exit_codes_come_from_failures() {
        let usage: Box<dyn Error> = Failure::usage("x").into();
        assert_eq!(exit_code(usage.as_ref()), 2);
        let other: Box<dyn Error> = "something else".into();
        assert_eq!(exit_code(other.as_ref()), 1);
    }
}
