//! [`TwinApi`]: `doppel.v1.TwinService` over a node's [`Twins`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_server::TwinService;
use doppel_runtime::internal::{TwinEntry, TwinsInternals};
use doppel_runtime::twin::Twins;
use doppel_runtime::{AssetPath, Command, Origin, Timestamp, Value, Verdict};
use tokio::sync::{Semaphore, SemaphorePermit, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::auth::caller;
use crate::config::ApiLimits;
use crate::convert::{self, duration_from_proto, timestamp_from_proto, value_from_proto};
use crate::error::{invalid, kernel_status};
use crate::page::{self, Listing};
use crate::watcher;

/// Longest string accepted in any request field, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Longest idempotency key, in bytes: the twin indexes keys up to this length.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Most parameters a command may carry.
pub const MAX_PARAMS: usize = 64;
/// Page size when a request gives none.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page.
const MAX_PAGE_SIZE: usize = 1000;
/// Samples GetHistory returns when a request gives no limit.
const DEFAULT_HISTORY_LIMIT: usize = 1000;
/// Most samples GetHistory returns.
const MAX_HISTORY_LIMIT: usize = 10_000;
/// Simulate's horizon when a request gives none.
const DEFAULT_HORIZON: Duration = Duration::from_secs(600);
/// Shortest horizon.
const MIN_HORIZON: Duration = Duration::from_secs(1);
/// Longest horizon.
const MAX_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Most projection steps a horizon may be divided into.
const MAX_STEPS: u32 = 10_000;

/// What every request handler and watcher of one API shares.
pub(crate) struct Shared {
    pub(crate) twins: Twins,
    /// Hosted twins in asset path order.
    pub(crate) sorted: Vec<Arc<TwinEntry>>,
    /// The first segment of every hosted twin's path (audit queries need a prefix).
    roots: Vec<AssetPath>,
    pub(crate) limits: ApiLimits,
    pub(crate) watches: Arc<Semaphore>,
    in_flight: Semaphore,
    /// Turns true when the server stops: watches end.
    pub(crate) closing: watch::Sender<bool>,
    /// The node's view of its cluster, on a cluster node.
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::status::ClusterView>>,
}

impl Shared {
    /// Entries at or below `prefix` (all without one), in path order.
    pub(crate) fn under<'a>(
        &'a self,
        prefix: Option<&'a AssetPath>,
        after: Option<&AssetPath>,
    ) -> impl Iterator<Item = &'a Arc<TwinEntry>> + 'a {
        let from_prefix = prefix.map_or(0, |p| self.sorted.partition_point(|e| e.path < *p));
        let from_cursor = after.map_or(0, |a| self.sorted.partition_point(|e| e.path <= *a));
        self.sorted[from_prefix.max(from_cursor)..]
            .iter()
            // Paths sharing the prefix's text are contiguous; those below it are among them.
            .take_while(move |e| prefix.is_none_or(|p| e.path.as_str().starts_with(p.as_str())))
            .filter(move |e| prefix.is_none_or(|p| e.path.starts_with(p)))
    }
}

/// The `doppel.v1.TwinService` implementation over a node's twins.
///
/// Every call must carry a [`Caller`](crate::Caller), attached by the
/// [`Authenticator`](crate::Authenticator) that [`ApiServer`](crate::ApiServer) puts in
/// front of it; a call without one is refused with UNAUTHENTICATED. Twins restarting
/// while listed appear in `ListTwins` with their path and type only (version 0,
/// `RUN_STATE_UNSPECIFIED`).
#[derive(Clone)]
pub struct TwinApi {
    pub(crate) shared: Arc<Shared>,
}

impl TwinApi {
    /// The service over `twins`, within `limits`.
    pub fn new(twins: Twins, limits: ApiLimits) -> Self {
        let mut sorted: Vec<Arc<TwinEntry>> = twins.directory().entries().to_vec();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let roots: BTreeSet<AssetPath> = sorted
            .iter()
            .filter_map(|e| {
                let first = e.path.as_str().split('/').next()?;
                AssetPath::parse(first).ok()
            })
            .collect();
        let (closing, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                twins,
                sorted,
                roots: roots.into_iter().collect(),
                watches: Arc::new(Semaphore::new(
                    limits.max_watches.min(Semaphore::MAX_PERMITS),
                )),
                in_flight: Semaphore::new(limits.max_in_flight.min(Semaphore::MAX_PERMITS)),
                limits,
                closing,
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Lets `GetClusterStatus` answer with `view`: a cluster node's view of its
    /// cluster. Set once; later calls are ignored.
    pub fn set_cluster_view(&self, view: Arc<dyn crate::status::ClusterView>) {
        let _ = self.shared.cluster.set(view);
    }

    /// The twins this service answers for.
    pub fn twins(&self) -> &Twins {
        &self.shared.twins
    }

    /// Ends every open watch with UNAVAILABLE and refuses new ones (the server is
    /// stopping).
    pub fn close_watches(&self) {
        self.shared.closing.send_replace(true);
    }

    /// Number of watches open now.
    pub fn open_watches(&self) -> usize {
        self.shared.limits.max_watches.min(Semaphore::MAX_PERMITS)
            - self.shared.watches.available_permits()
    }

    pub(crate) fn admit(&self) -> Result<SemaphorePermit<'_>, Status> {
        self.shared.in_flight.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "more than {} requests in flight on this node; retry with backoff",
                self.shared.limits.max_in_flight
            ))
        })
    }
}

/// A span for one call of `method`; `asset` and `command_id` are recorded as they
/// become known.
fn rpc_span(service: &'static str, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        otel.name = format_args!("{service}/{method}"),
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        asset = Empty,
        command_id = Empty,
        grpc.code = Empty,
    )
}

/// Runs one call of TwinService's `method` inside its span and records how it ended.
async fn traced<R, T, F>(
    method: &'static str,
    request: Request<R>,
    call: impl FnOnce(Request<R>) -> F,
) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    traced_in("doppel.v1.TwinService", method, request, call).await
}

/// Runs one call of `service`'s `method` inside its span and records how it ended.
pub(crate) async fn traced_in<R, T, F>(
    service: &'static str,
    method: &'static str,
    request: Request<R>,
    call: impl FnOnce(Request<R>) -> F,
) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let span = rpc_span(service, method);
    // Continue the caller's trace (W3C `traceparent` in the metadata), if it sent one.
    doppel_telemetry::set_parent_from_metadata(&span, request.metadata());
    let result = call(request).instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record("grpc.code", code as i32);
    doppel_telemetry::record_request(method, code);
    if let Err(status) = &result {
        tracing::debug!(parent: &span, code = ?status.code(), message = status.message(), "rpc refused");
    }
    result.map(Response::new)
}

pub(crate) fn record_asset(path: &AssetPath) {
    tracing::Span::current().record("asset", display(path));
}

fn check_length(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_STRING_BYTES {
        return Err(invalid(
            field,
            format!(
                "{} bytes long, the limit is {MAX_STRING_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A required asset path field, or INVALID_ARGUMENT naming `field`.
pub fn parse_path(field: &str, raw: &str) -> Result<AssetPath, Status> {
    if raw.is_empty() {
        return Err(invalid(field, "required"));
    }
    check_length(field, raw)?;
    AssetPath::parse(raw).map_err(|error| invalid(field, error))
}

/// A path prefix; empty means every twin. One trailing `/` is allowed.
pub fn parse_prefix(field: &str, raw: &str) -> Result<Option<AssetPath>, Status> {
    check_length(field, raw)?;
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if trimmed.is_empty() {
        return Ok(None);
    }
    AssetPath::parse(trimmed)
        .map(Some)
        .map_err(|error| invalid(field, error))
}

/// A page size field: 0 means the default, else 1 to the largest page.
pub fn page_size(field: &str, requested: i32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 || n as usize > MAX_PAGE_SIZE => Err(invalid(
            field,
            format!("must be 1 to {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE}), not {n}"),
        )),
        n => Ok(n as usize),
    }
}

fn time(field: &str, at: Option<&prost_types::Timestamp>) -> Result<Option<Timestamp>, Status> {
    at.map(|at| {
        timestamp_from_proto(at).ok_or_else(|| {
            invalid(
                field,
                "not a valid time stamp (nanos 0..1e9, years 1 to 9999)",
            )
        })
    })
    .transpose()
}

/// `[from, to]` of a request: absent `from` is the beginning, absent `to` now.
pub fn time_range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Result<(Timestamp, Timestamp), Status> {
    let from = time("from", from)?.unwrap_or(Timestamp(i64::MIN));
    let to = time("to", to)?.unwrap_or_else(Timestamp::now);
    if from > to {
        return Err(invalid("from", "after `to`"));
    }
    Ok((from, to))
}

/// The audit kinds a ListAudit request filters on (empty: every kind), each named
/// once; INVALID_ARGUMENT for UNSPECIFIED or an unknown number.
pub fn audit_kinds(kinds: &[i32]) -> Result<Vec<doppel_runtime::AuditKind>, Status> {
    let mut parsed = Vec::with_capacity(kinds.len());
    for (index, &raw) in kinds.iter().enumerate() {
        let kind = convert::audit_kind_from_proto(raw).ok_or_else(|| {
            invalid(
                &format!("kinds[{index}]"),
                format!("{raw} is not an audit kind"),
            )
        })?;
        if !parsed.contains(&kind) {
            parsed.push(kind);
        }
    }
    Ok(parsed)
}

/// The bytes that stand for a set of audit kinds in a page token's fingerprint.
pub fn kinds_key(kinds: &[doppel_runtime::AuditKind]) -> Vec<u8> {
    let mut key: Vec<u8> = (kinds.iter())
        .map(|kind| convert::audit_kind_number(*kind))
        .collect();
    key.sort_unstable();
    key
}

/// A command from a request's name and parameters, validated at the boundary (the
/// twin checks them against its type).
pub(crate) fn build_command(
    path: &AssetPath,
    name: &str,
    params: &[pb::NamedValue],
    origin: Origin,
) -> Result<Command, Status> {
    if name.is_empty() {
        return Err(invalid("command", "required"));
    }
    check_length("command", name)?;
    if params.len() > MAX_PARAMS {
        return Err(invalid(
            "params",
            format!("{} parameters, the limit is {MAX_PARAMS}", params.len()),
        ));
    }
    let mut command = Command::new(path.clone(), name, origin);
    for (index, param) in params.iter().enumerate() {
        let name_field = format!("params[{index}].name");
        let value_field = format!("params[{index}].value");
        if param.name.is_empty() {
            return Err(invalid(&name_field, "required"));
        }
        check_length(&name_field, &param.name)?;
        if command.params.iter().any(|(n, _)| *n == param.name) {
            return Err(invalid(
                &name_field,
                format!("`{}` is given twice", param.name),
            ));
        }
        let value = param
            .value
            .as_ref()
            .and_then(value_from_proto)
            .ok_or_else(|| {
                invalid(
                    &value_field,
                    "required: set one of bool_value, int_value, float_value",
                )
            })?;
        if let Value::Float(f) = value
            && !f.is_finite()
        {
            return Err(invalid(&value_field, "must be a finite number"));
        }
        command = command.param(param.name.clone(), value);
    }
    Ok(command)
}

fn idempotency_key(raw: &str) -> Result<Option<&str>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let chars = raw.chars().count();
    if chars > MAX_IDEMPOTENCY_KEY_CHARS || raw.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid(
            "idempotency_key",
            format!(
                "{chars} characters ({} bytes); the limit is {MAX_IDEMPOTENCY_KEY_CHARS} characters and {MAX_IDEMPOTENCY_KEY_BYTES} bytes",
                raw.len()
            ),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid(
            "idempotency_key",
            "must not contain control characters",
        ));
    }
    Ok(Some(raw))
}

/// The `grpc-timeout` of a request, as the gRPC over HTTP/2 protocol writes it
/// (at most 8 digits and a unit: H, M, S, m, u, n).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn deadline_exceeded(command: &Command, detail: &str) -> Status {
    Status::deadline_exceeded(format!(
        "command `{}` ({}) {detail}; nothing was actuated",
        command.name, command.id
    ))
}

impl TwinApi {
    async fn get_twin_call(
        &self,
        request: Request<pb::GetTwinRequest>,
    ) -> Result<pb::GetTwinResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        record_asset(&path);
        let report = self
            .shared
            .twins
            .report(&path)
            .await
            .map_err(kernel_status)?;
        let mut twin = convert::twin(&report);
        if report.alarms.iter().any(|a| a.active) {
            let explanations = self.shared.twins.explanations(&path).await;
            for (code, explanation) in explanations.map_err(kernel_status)? {
                if let Some(alarm) = twin.alarms.iter_mut().find(|a| a.code == code) {
                    alarm.explanation = Some(convert::explanation(&explanation));
                }
            }
        }
        if self.shared.twins.runs_shadows(&path) {
            // A shadow's outputs stay apart from the twin's: asked for separately.
            let shadows = self.shared.twins.shadows(&path).await;
            twin.shadows = shadows
                .map_err(kernel_status)?
                .iter()
                .map(convert::shadow)
                .collect();
        }
        Ok(pb::GetTwinResponse { twin: Some(twin) })
    }

    async fn list_twins_call(
        &self,
        request: Request<pb::ListTwinsRequest>,
    ) -> Result<pb::ListTwinsResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let size = page_size("page_size", request.page_size)?;
        check_length("twin_type", &request.twin_type)?;
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        let filters = page::fingerprint(&[
            prefix.as_ref().map_or("", |p| p.as_str()).as_bytes(),
            request.twin_type.as_bytes(),
        ]);
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = page::decode(&request.page_token, Listing::Twins, filters)
                .map_err(|problem| invalid("page_token", problem))?;
            let path = String::from_utf8(cursor)
                .ok()
                .and_then(|raw| AssetPath::parse(&raw).ok())
                .ok_or_else(|| invalid("page_token", "not a page token this service issued"))?;
            Some(path)
        };
        let mut page: Vec<&Arc<TwinEntry>> = Vec::with_capacity(size.min(64));
        let mut more = false;
        for entry in self
            .shared
            .under(prefix.as_ref(), after.as_ref())
            .filter(|e| request.twin_type.is_empty() || e.twin_type.name == request.twin_type)
        {
            if page.len() == size {
                more = true;
                break;
            }
            page.push(entry);
        }
        let twins = &self.shared.twins;
        // Parked twins are listed without waking them.
        let lines =
            futures_util::future::join_all(page.iter().map(|entry| twins.summary(&entry.path)))
                .await;
        let summaries = page
            .iter()
            .zip(lines)
            .map(|(entry, line)| match line {
                Ok(line) => convert::summary(&line),
                Err(_) => pb::TwinSummary {
                    asset_path: entry.path.to_string(),
                    twin_type: entry.twin_type.name.clone(),
                    ..Default::default()
                },
            })
            .collect();
        let next_page_token = match page.last() {
            Some(last) if more => {
                page::encode(Listing::Twins, filters, last.path.as_str().as_bytes())
            }
            _ => String::new(),
        };
        Ok(pb::ListTwinsResponse {
            twins: summaries,
            next_page_token,
        })
    }

    async fn watch_twins_call(
        &self,
        request: Request<pb::WatchTwinsRequest>,
    ) -> Result<ReceiverStream<Result<pb::WatchTwinsResponse, Status>>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        if let Some(prefix) = &prefix {
            record_asset(prefix);
        }
        if *self.shared.closing.borrow() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let permit = self
            .shared
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "this node serves at most {} watches at once",
                    self.shared.limits.max_watches
                ))
            })?;
        Ok(watcher::start(self.shared.clone(), prefix, permit))
    }

    async fn send_command_call(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<pb::SendCommandResponse, Status> {
        let caller = caller(&request)?;
        caller.require_command("SendCommand")?;
        let _permit = self.admit()?;
        let received = Timestamp::now();
        let timeout = grpc_timeout(request.metadata());
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        record_asset(&path);
        let key = idempotency_key(&request.idempotency_key)?;
        let deadline = match time("deadline", request.deadline.as_ref())? {
            Some(deadline) => Some(deadline),
            None => timeout.map(|timeout| received.plus(timeout)),
        };
        let origin = caller.role.origin(&caller.name);
        let mut command = build_command(&path, &request.command, &request.params, origin)?;
        if let Some(key) = key {
            command = command.idempotency_key(key);
        }
        if let Some(deadline) = deadline {
            command = command.deadline(deadline);
        }
        tracing::Span::current().record("command_id", display(&command.id));
        if let Some(deadline) = deadline
            && deadline < Timestamp::now()
        {
            return Err(deadline_exceeded(
                &command,
                &format!(
                    "arrived {:.3} s after its deadline",
                    Timestamp::now().secs_since(deadline)
                ),
            ));
        }
        let origin = convert::origin(&command.origin);
        let command_id = command.id.0.clone();
        let outcome = self
            .shared
            .twins
            .command(command.clone())
            .await
            .map_err(kernel_status)?;
        if let Verdict::Denied { governor, reason } = &outcome.verdict
            && governor == "deadline"
            && deadline.is_some_and(|deadline| deadline < Timestamp::now())
        {
            return Err(deadline_exceeded(
                &command,
                &format!("reached its twin too late ({reason})"),
            ));
        }
        tracing::info!(verdict = %outcome.verdict, replayed = outcome.replayed, "command answered");
        Ok(pb::SendCommandResponse {
            command_id,
            verdict: Some(convert::verdict(&outcome.verdict)),
            applied: convert::named_values(&outcome.applied),
            version: outcome.version,
            audit_seq: outcome.audit_seq.unwrap_or(0),
            replayed: outcome.replayed,
            origin: Some(origin),
        })
    }

    async fn simulate_call(
        &self,
        request: Request<pb::SimulateRequest>,
    ) -> Result<pb::SimulateResponse, Status> {
        let caller = caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        record_asset(&path);
        let horizon = match &request.horizon {
            Some(horizon) => duration_from_proto(horizon)
                .ok_or_else(|| invalid("horizon", "not a valid duration"))?,
            None => DEFAULT_HORIZON,
        };
        if !(MIN_HORIZON..=MAX_HORIZON).contains(&horizon) {
            return Err(invalid(
                "horizon",
                format!("must be 1 s to 24 h, not {:.3} s", horizon.as_secs_f64()),
            ));
        }
        let step = match &request.step {
            Some(step) => {
                duration_from_proto(step).ok_or_else(|| invalid("step", "not a valid duration"))?
            }
            None => horizon / 60,
        };
        let shortest = horizon / MAX_STEPS;
        if step < shortest || step.is_zero() || step > horizon {
            return Err(invalid(
                "step",
                format!(
                    "must be {:.6} s (horizon / {MAX_STEPS}) to {:.3} s (the horizon), not {:.6} s",
                    shortest.as_secs_f64(),
                    horizon.as_secs_f64(),
                    step.as_secs_f64()
                ),
            ));
        }
        let origin = caller.role.origin(&caller.name);
        let command = build_command(&path, &request.command, &request.params, origin)?;
        let what_if = self
            .shared
            .twins
            .what_if(command, horizon, step)
            .await
            .map_err(kernel_status)?;
        Ok(pb::SimulateResponse {
            verdict: Some(convert::verdict(&what_if.verdict)),
            assumed: convert::named_values(&what_if.assumed),
            series: convert::series(&what_if.trajectory),
            models: what_if.models.iter().map(convert::model_info).collect(),
        })
    }

    async fn recommend_call(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<pb::RecommendResponse, Status> {
        let caller = caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        record_asset(&path);
        let given =
            !(request.command.is_empty() && request.param.is_empty() && request.values.is_empty());
        let candidates = if given {
            check_length("command", &request.command)?;
            check_length("param", &request.param)?;
            if request.command.is_empty() || request.param.is_empty() {
                return Err(invalid(
                    "command",
                    "give the command, its parameter and the values, or none of them",
                ));
            }
            let most = doppel_runtime::model::recommend::MAX_CANDIDATES;
            if request.values.is_empty() || request.values.len() > most {
                return Err(invalid(
                    "values",
                    format!("{} values; give 1 to {most}", request.values.len()),
                ));
            }
            if let Some(bad) = request.values.iter().find(|v| !v.is_finite()) {
                return Err(invalid("values", format!("{bad} is not a number")));
            }
            Some((request.command, request.param, request.values))
        } else {
            None
        };
        let recommendation = self
            .shared
            .twins
            .recommend(&path, candidates, &caller.role.origin(&caller.name))
            .await
            .map_err(kernel_status)?;
        let report = self
            .shared
            .twins
            .report(&path)
            .await
            .map_err(kernel_status)?;
        Ok(pb::RecommendResponse {
            objective: recommendation.objective,
            candidates: recommendation
                .candidates
                .iter()
                .map(convert::recommend_candidate)
                .collect(),
            models: report.models.iter().map(convert::model_info).collect(),
            command: recommendation.command,
            param: recommendation.param,
        })
    }

    async fn get_history_call(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<pb::GetHistoryResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        record_asset(&path);
        if request.channel.is_empty() {
            return Err(invalid("channel", "required"));
        }
        check_length("channel", &request.channel)?;
        let limit = match request.limit {
            0 => DEFAULT_HISTORY_LIMIT,
            n if n < 0 || n as usize > MAX_HISTORY_LIMIT => {
                return Err(invalid(
                    "limit",
                    format!(
                        "must be 1 to {MAX_HISTORY_LIMIT} (0 for {DEFAULT_HISTORY_LIMIT}), not {n}"
                    ),
                ));
            }
            n => n as usize,
        };
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let samples = self
            .shared
            .twins
            .samples(&path, &request.channel, (from, to), limit)
            .await
            .map_err(kernel_status)?;
        Ok(pb::GetHistoryResponse {
            samples: samples.iter().map(convert::sample).collect(),
        })
    }

    async fn list_audit_call(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<pb::ListAuditResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let size = page_size("page_size", request.page_size)?;
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        if let Some(prefix) = &prefix {
            record_asset(prefix);
        }
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let kinds = audit_kinds(&request.kinds)?;
        let bound = |at: Option<&prost_types::Timestamp>| {
            at.map_or_else(Vec::new, |at| {
                let mut bytes = at.seconds.to_be_bytes().to_vec();
                bytes.extend_from_slice(&at.nanos.to_be_bytes());
                bytes
            })
        };
        let filters = page::fingerprint(&[
            prefix.as_ref().map_or("", |p| p.as_str()).as_bytes(),
            &bound(request.from.as_ref()),
            &bound(request.to.as_ref()),
            &kinds_key(&kinds),
        ]);
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = page::decode(&request.page_token, Listing::Audit, filters)
                .map_err(|problem| invalid("page_token", problem))?;
            let bytes: [u8; 8] = cursor
                .try_into()
                .map_err(|_| invalid("page_token", "not a page token this service issued"))?;
            Some(u64::from_be_bytes(bytes))
        };
        let prefixes = match prefix {
            Some(prefix) => vec![prefix],
            None => self.shared.roots.clone(),
        };
        let twins = self.shared.twins.clone();
        // redb reads block; keep them off the async workers.
        let mut records = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for prefix in &prefixes {
                records.extend(twins.audit_page(prefix, (from, to), &kinds, after, size + 1)?);
            }
            Ok::<_, doppel_runtime::Error>(records)
        })
        .await
        .map_err(|_| Status::internal("audit read failed"))?
        .map_err(kernel_status)?;
        records.sort_by_key(|r| r.seq);
        let more = records.len() > size;
        records.truncate(size);
        let next_page_token = match records.last() {
            Some(last) if more => page::encode(Listing::Audit, filters, &last.seq.to_be_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListAuditResponse {
            records: records.iter().map(convert::audit_record).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl TwinService for TwinApi {
    async fn get_twin(
        &self,
        request: Request<pb::GetTwinRequest>,
    ) -> Result<Response<pb::GetTwinResponse>, Status> {
        traced("GetTwin", request, |r| self.get_twin_call(r)).await
    }

    async fn list_twins(
        &self,
        request: Request<pb::ListTwinsRequest>,
    ) -> Result<Response<pb::ListTwinsResponse>, Status> {
        traced("ListTwins", request, |r| self.list_twins_call(r)).await
    }

    type WatchTwinsStream = ReceiverStream<Result<pb::WatchTwinsResponse, Status>>;

    async fn watch_twins(
        &self,
        request: Request<pb::WatchTwinsRequest>,
    ) -> Result<Response<Self::WatchTwinsStream>, Status> {
        traced("WatchTwins", request, |r| self.watch_twins_call(r)).await
    }

    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        traced("SendCommand", request, |r| self.send_command_call(r)).await
    }

    async fn simulate(
        &self,
        request: Request<pb::SimulateRequest>,
    ) -> Result<Response<pb::SimulateResponse>, Status> {
        traced("Simulate", request, |r| self.simulate_call(r)).await
    }

    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        traced("Recommend", request, |r| self.recommend_call(r)).await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        traced("GetHistory", request, |r| self.get_history_call(r)).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        traced("ListAudit", request, |r| self.list_audit_call(r)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(timeout: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("grpc-timeout", timeout.parse().unwrap());
        map
    }

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(grpc_timeout(&metadata("3S")), Some(Duration::from_secs(3)));
        assert_eq!(
            grpc_timeout(&metadata("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            grpc_timeout(&metadata("2H")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            grpc_timeout(&metadata("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            let mut map = MetadataMap::new();
            if let Ok(value) = bad.parse() {
                map.insert("grpc-timeout", value);
            }
            assert_eq!(grpc_timeout(&map), None, "{bad}");
        }
    }

    #[test]
    fn checks_idempotency_keys() {
        assert_eq!(idempotency_key("").unwrap(), None);
        assert_eq!(idempotency_key("k-1").unwrap(), Some("k-1"));
        assert!(idempotency_key(&"k".repeat(128)).is_ok());
        let long = idempotency_key(&"k".repeat(129)).unwrap_err();
        assert!(long.message().starts_with("idempotency_key: "), "{long:?}");
        assert!(idempotency_key(&"é".repeat(128)).is_ok());
        assert!(idempotency_key(&"€".repeat(128)).is_err());
        assert!(idempotency_key("a\nb").is_err());
    }

    #[test]
    fn page_sizes_and_prefixes() {
        assert_eq!(page_size("page_size", 0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size("page_size", 1000).unwrap(), 1000);
        for bad in [-1, 1001, i32::MIN, i32::MAX] {
            let status = page_size("page_size", bad).unwrap_err();
            assert!(status.message().starts_with("page_size: "), "{status:?}");
        }
        assert_eq!(parse_prefix("path_prefix", "").unwrap(), None);
        assert_eq!(parse_prefix("path_prefix", "/").unwrap(), None);
        assert_eq!(
            parse_prefix("path_prefix", "acme/")
                .unwrap()
                .unwrap()
                .as_str(),
            "acme"
        );
        assert!(parse_prefix("path_prefix", "acme//x").is_err());
    }

    #[test]
    fn commands_are_checked_at_the_boundary() {
        let path = AssetPath::parse("a/b").unwrap();
        let origin = Origin::operator("t");
        let param = |name: &str, kind: Option<pb::value::Kind>| pb::NamedValue {
            name: name.into(),
            value: Some(pb::Value { kind }),
        };
        let ok = build_command(
            &path,
            "set_speed",
            &[param("rpm", Some(pb::value::Kind::FloatValue(1.0)))],
            origin.clone(),
        )
        .unwrap();
        assert_eq!(ok.get("rpm"), Some(Value::Float(1.0)));
        let cases: Vec<(&str, Vec<pb::NamedValue>, &str)> = vec![
            ("", vec![], "command: "),
            ("c", vec![param("", None)], "params[0].name: "),
            ("c", vec![param("x", None)], "params[0].value: "),
            (
                "c",
                vec![param("x", Some(pb::value::Kind::FloatValue(f64::NAN)))],
                "params[0].value: ",
            ),
            (
                "c",
                vec![
                    param("x", Some(pb::value::Kind::IntValue(1))),
                    param("x", Some(pb::value::Kind::IntValue(2))),
                ],
                "params[1].name: ",
            ),
        ];
        for (name, params, field) in cases {
            let status = build_command(&path, name, &params, origin.clone()).unwrap_err();
            assert!(status.message().starts_with(field), "{status:?}");
        }
        let huge = "x".repeat(MAX_STRING_BYTES + 1);
        assert!(build_command(&path, &huge, &[], origin).is_err());
    }
}
