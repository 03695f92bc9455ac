//! The public gRPC API over loopback with a real tonic client: every RPC, pagination,
//! watches, idempotent commands, what-if, every error code, roles, health, reflection,
//! malformed input and ten thousand concurrent watches.

use std::collections::HashMap;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use doppel::{Runtime, Value};
use doppel_api::convert::{duration_to_proto, named_value, timestamp_to_proto};
use doppel_api::{ApiConfig, ApiHandle, ApiLimits, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use pb::verdict::Outcome;
use pb::watch_twins_response::Event;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::support::{self, fragile, press, reading};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const PLANNER: &str = "planner-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// Longest any single step of these tests may take.
const STEP: Duration = Duration::from_secs(15);

/// A runtime on a temp dir with the API on a loopback port and a client for it.
struct Served {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    api: ApiHandle,
    client: TwinServiceClient<Channel>,
}

fn config(limits: ApiLimits) -> ApiConfig {
    let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
        .token("vera", VIEWER, Role::Viewer)
        .token("olga", OPERATOR, Role::Operator)
        .token("fleet", PLANNER, Role::Planner)
        .token("root", ADMIN, Role::Admin);
    config.limits = limits;
    config
}

async fn serve() -> Served {
    serve_with(ApiLimits::default()).await
}

async fn serve_with(limits: ApiLimits) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    serve_runtime(dir, runtime, limits).await
}

async fn serve_runtime(dir: tempfile::TempDir, runtime: Runtime, limits: ApiLimits) -> Served {
    let api = ApiServer::start(config(limits), runtime.twins().clone())
        .await
        .unwrap();
    let client = TwinServiceClient::new(connect(&api).await);
    Served {
        _dir: dir,
        runtime,
        api,
        client,
    }
}

async fn connect(api: &ApiHandle) -> Channel {
    Endpoint::from_shared(api.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

impl Served {
    async fn stop(self) {
        within("the API stops", self.api.stop()).await;
        self.runtime.shutdown().await;
    }
}

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A request carrying `token` as a bearer token.
fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(answer) => panic!("expected {code:?}, got {answer:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

/// Asserts INVALID_ARGUMENT naming `field`.
fn invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = refused(result, Code::InvalidArgument);
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "expected the message to name `{field}`: {status:?}"
    );
}

fn set_speed(n: u32, rpm: f64) -> pb::SendCommandRequest {
    command(n, "set_speed", vec![named_value("rpm", Value::Float(rpm))])
}

fn command(n: u32, name: &str, params: Vec<pb::NamedValue>) -> pb::SendCommandRequest {
    pb::SendCommandRequest {
        asset_path: press(n).to_string(),
        command: name.into(),
        params,
        ..Default::default()
    }
}

fn get(n: u32) -> pb::GetTwinRequest {
    pb::GetTwinRequest {
        asset_path: press(n).to_string(),
    }
}

fn outcome(verdict: Option<pb::Verdict>) -> Outcome {
    verdict.and_then(|v| v.outcome).expect("a verdict")
}

async fn twin(client: &mut TwinServiceClient<Channel>, n: u32) -> pb::Twin {
    within("GetTwin", client.get_twin(authed(VIEWER, get(n))))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap()
}

async fn audit_all(client: &mut TwinServiceClient<Channel>, prefix: &str) -> Vec<pb::AuditRecord> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = within(
            "ListAudit",
            client.list_audit(authed(
                VIEWER,
                pb::ListAuditRequest {
                    path_prefix: prefix.into(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
            )),
        )
        .await
        .unwrap()
        .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return records;
        }
        page_token = page.next_page_token;
    }
}

async fn next(stream: &mut Streaming<pb::WatchTwinsResponse>) -> Event {
    within("a watch message", stream.message())
        .await
        .unwrap()
        .expect("the watch goes on")
        .event
        .expect("an event")
}

/// Ingests `batches` × 1,000 readings into press-1's vibration from source `source`,
/// each batch accepted whole and durable before the next.
async fn burst(twins: &doppel::Twins, source: &str, batches: u64) {
    let source = twins.source(source).unwrap();
    let target = twins.target(&press(1), "vibration").unwrap();
    let mut seq = 0u64;
    for _ in 0..batches {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                seq += 1;
                (target, reading(1.0 + f64::from(i % 40), source, seq))
            })
            .collect();
        let receipt = within("ingest", twins.ingest_batch(batch)).await.unwrap();
        assert_eq!(receipt.accepted, 1000);
        within("durable", receipt.receipt.durable()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_get_twin_and_list_twins_across_pages() {
    let mut served = serve().await;
    let client = &mut served.client;

    let press1 = twin(client, 1).await;
    assert_eq!(press1.asset_path, "acme/plant-a/line-1/press-1");
    assert_eq!(press1.twin_type, "press");
    assert_eq!(press1.run_state, pb::RunState::Running as i32);
    let mut channels: Vec<&str> = press1.reported.iter().map(|r| r.channel.as_str()).collect();
    channels.sort_unstable();
    assert_eq!(
        channels,
        [
            "power_kw",
            "temperature",
            "temperature_b",
            "throughput",
            "vibration"
        ]
    );
    let speed = press1.desired.iter().find(|d| d.name == "speed").unwrap();
    assert_eq!(
        speed
            .value
            .as_ref()
            .and_then(doppel_api::convert::value_from_proto),
        Some(Value::Float(1200.0))
    );
    assert_eq!(press1.models.len(), 3);
    assert!(press1.updated_at.is_some());

    // One twin per page: three pages, in path order, then no token.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_twins(authed(
                VIEWER,
                pb::ListTwinsRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert_eq!(page.twins.len(), 1);
        seen.extend(page.twins.into_iter().map(|t| t.asset_path));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [press(1), press(2), press(3)].map(|p| p.to_string()),
        "every twin once, in path order"
    );

    let list = |prefix: &str, twin_type: &str, page_size: i32| pb::ListTwinsRequest {
        path_prefix: prefix.into(),
        twin_type: twin_type.into(),
        page_size,
        page_token: String::new(),
    };
    let line1 = client
        .list_twins(authed(VIEWER, list("acme/plant-a/line-1/", "", 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(line1.twins.len(), 2);
    assert!(line1.next_page_token.is_empty());
    assert_eq!(line1.twins[0].version, press1.version);
    assert_eq!(line1.twins[0].alarm_count, 0);
    let presses = client
        .list_twins(authed(VIEWER, list("", "press", 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(presses.twins.len(), 2);
    assert!(!presses.next_page_token.is_empty());
    let pumps = client
        .list_twins(authed(VIEWER, list("acme", "pump", 0)))
        .await
        .unwrap()
        .into_inner();
    assert!(pumps.twins.is_empty());
    let nothing = client
        .list_twins(authed(VIEWER, list("acme/plant-a/line", "", 0)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        nothing.twins.is_empty(),
        "a prefix matches whole segments only"
    );

    // A token only continues the query that issued it.
    let mut other_filter = list("", "", 2);
    other_filter.page_token = presses.next_page_token.clone();
    invalid(
        client.list_twins(authed(VIEWER, other_filter)).await,
        "page_token",
    );
    for garbage in ["garbage", "00", &"ab".repeat(40), &"x".repeat(5000)] {
        let mut request = list("", "press", 2);
        request.page_token = garbage.to_string();
        invalid(
            client.list_twins(authed(VIEWER, request)).await,
            "page_token",
        );
    }
    for size in [-1, -1000, 1001, i32::MIN, i32::MAX] {
        invalid(
            client.list_twins(authed(VIEWER, list("", "", size))).await,
            "page_size",
        );
    }
    invalid(
        client
            .list_twins(authed(VIEWER, list("acme//plant", "", 0)))
            .await,
        "path_prefix",
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_watch_sends_the_snapshot_then_every_change_in_order() {
    let mut served = serve().await;
    let twins = served.runtime.twins().clone();
    let before = twin(&mut served.client, 1).await;
    let mut stream = within(
        "WatchTwins",
        served.client.watch_twins(authed(
            VIEWER,
            pb::WatchTwinsRequest {
                path_prefix: "acme/plant-a/line-1".into(),
            },
        )),
    )
    .await
    .unwrap()
    .into_inner();
    let mut snapshot_versions = HashMap::new();
    for expected in [press(1), press(2)] {
        let Event::Snapshot(snapshot) = next(&mut stream).await else {
            panic!("expected the snapshot of {expected}")
        };
        assert_eq!(snapshot.asset_path, expected.to_string());
        snapshot_versions.insert(snapshot.asset_path.clone(), snapshot.version);
    }
    assert_eq!(snapshot_versions[&press(1).to_string()], before.version);
    let Event::SnapshotComplete(complete) = next(&mut stream).await else {
        panic!("expected the end of the snapshot")
    };
    assert_eq!(complete.twins, 2);

    // Changes on both watched twins and on one outside the prefix.
    let source = twins.source("api-test").unwrap();
    for (seq, n) in [(1, 1), (2, 3), (3, 2), (4, 1)] {
        support::ingest_durable(
            &twins,
            &press(n),
            "vibration",
            reading(2.0 + seq as f64, source, seq),
        )
        .await;
    }
    for (n, rpm) in [(1, 1500.0), (3, 1600.0), (2, 1700.0)] {
        served
            .client
            .send_command(authed(OPERATOR, set_speed(n, rpm)))
            .await
            .unwrap();
    }
    let mut changes: Vec<pb::TwinChange> = Vec::new();
    let (mut desired_seen, mut deliveries_seen) = (0, 0);
    while desired_seen < 2 || deliveries_seen < 2 {
        let Event::Change(change) = next(&mut stream).await else {
            panic!("only changes follow the snapshot")
        };
        match change.change {
            Some(pb::twin_change::Change::Desired(_)) => desired_seen += 1,
            Some(pb::twin_change::Change::Delivery(_)) => deliveries_seen += 1,
            _ => {}
        }
        changes.push(change);
    }
    assert!(
        changes.iter().all(|c| c.asset_path != press(3).to_string()),
        "a change outside the prefix was sent"
    );
    // A command's desired change and its delivery, pending, share one version; every
    // other change has a version of its own.
    let mut last_version: HashMap<String, u64> = snapshot_versions.clone();
    for (index, change) in changes.iter().enumerate() {
        let last = last_version.get_mut(&change.asset_path).unwrap();
        if let Some(pb::twin_change::Change::Delivery(delivery)) = &change.change {
            let desired = changes[..index]
                .iter()
                .rev()
                .find(|c| c.asset_path == change.asset_path);
            assert!(
                desired.is_some_and(|d| d.version == change.version
                    && matches!(d.change, Some(pb::twin_change::Change::Desired(_)))),
                "a delivery change follows its twin's desired change: {change:?}"
            );
            let state = delivery.values[0].delivery.as_ref().unwrap().state;
            assert_eq!(state, pb::DeliveryState::Pending as i32);
            continue;
        }
        assert!(
            change.version > *last,
            "versions go up per twin: {change:?} after {last}"
        );
        *last = change.version;
    }
    let kinds: Vec<(String, &'static str)> = changes
        .iter()
        .filter(|c| !matches!(c.change, Some(pb::twin_change::Change::Delivery(_))))
        .map(|c| {
            let kind = match &c.change {
                Some(pb::twin_change::Change::Reported(r)) => {
                    assert_eq!(r.channel, "vibration");
                    "reported"
                }
                Some(pb::twin_change::Change::Desired(d)) => {
                    assert_eq!(d.values[0].name, "speed");
                    "desired"
                }
                other => panic!("unexpected change {other:?}"),
            };
            (c.asset_path.rsplit('/').next().unwrap().to_string(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("press-1", "reported"),
            ("press-2", "reported"),
            ("press-1", "reported"),
            ("press-1", "desired"),
            ("press-2", "desired"),
        ]
        .map(|(p, k)| (p.to_string(), k)),
        "changes arrive in the order the twins made them"
    );
    assert_eq!(
        changes.last().unwrap().version,
        twin(&mut served.client, 2).await.version
    );

    // A burst larger than the watcher's queue reaches a client that keeps reading: change
    // by change, or, where the watcher fell behind, as the twin's whole state with a
    // version that never goes back (a busy machine may coalesce some of it).
    let target = twins.target(&press(1), "vibration").unwrap();
    let burst: Vec<_> = (0..3000u64)
        .map(|i| (target, reading(1.0 + (i % 40) as f64, source, 100 + i)))
        .collect();
    let receipt = within("ingest", twins.ingest_batch(burst)).await.unwrap();
    within("durable", receipt.receipt.durable()).await.unwrap();
    let last = twin(&mut served.client, 1).await.version;
    let mut version = last_version[&press(1).to_string()];
    while version < last {
        match next(&mut stream).await {
            Event::Change(change) => {
                assert_eq!(change.asset_path, press(1).to_string());
                assert_eq!(change.version, version + 1, "no change is skipped");
                version = change.version;
            }
            Event::Coalesced(twin) => {
                assert_eq!(twin.asset_path, press(1).to_string());
                assert!(twin.version >= version, "versions never go back");
                version = twin.version;
            }
            other => panic!("only changes follow the snapshot: {other:?}"),
        }
    }
    assert_eq!(version, last, "the watch reaches the twin's version");

    // Stopping the server ends the watch with UNAVAILABLE instead of hanging.
    let api = served.api;
    let stopped = Instant::now();
    within("the API stops with a watch open", api.stop()).await;
    assert!(stopped.elapsed() < Duration::from_secs(6));
    let ended = within("the watch ends", stream.message()).await;
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(message)) => panic!("the watch went on after stop: {message:?}"),
    }
    served.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_send_command_returns_verdicts_and_a_retried_key_actuates_once() {
    let mut served = serve().await;
    let twins = served.runtime.twins().clone();
    let client = &mut served.client;
    let mut actuations = twins.actuations();

    let accepted = client
        .send_command(authed(OPERATOR, set_speed(1, 1500.0)))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(accepted.verdict), Outcome::Accepted(_)));
    assert_eq!(
        accepted.applied,
        [named_value("speed", Value::Float(1500.0))]
    );
    assert!(!accepted.replayed);
    assert!(accepted.audit_seq > 0);
    let origin = accepted.origin.unwrap();
    assert_eq!(
        (origin.kind, origin.principal.as_str()),
        (pb::OriginKind::Operator as i32, "olga")
    );
    assert_eq!(twin(client, 1).await.version, accepted.version);

    let clamped = client
        .send_command(authed(OPERATOR, set_speed(1, 2900.0)))
        .await
        .unwrap()
        .into_inner();
    let Outcome::Clamped(clamped_verdict) = outcome(clamped.verdict) else {
        panic!("expected a clamp")
    };
    let clamp = &clamped_verdict.clamps[0];
    assert_eq!(clamp.governor, "envelope");
    assert_eq!(clamp.desired, "speed");
    assert_eq!(
        clamp
            .applied
            .as_ref()
            .and_then(doppel_api::convert::value_from_proto),
        Some(Value::Float(2400.0))
    );

    // A tripped press refuses `start`: a governor's denial is a verdict, not an error.
    let source = twins.source("api-test").unwrap();
    for (seq, channel) in [(1, "temperature"), (2, "temperature_b")] {
        support::ingest_durable(&twins, &press(2), channel, reading(120.0, source, seq)).await;
    }
    support::wait_until("press-2 trips", STEP, || {
        let mut client = client.clone();
        async move { twin(&mut client, 2).await.run_state == pb::RunState::Tripped as i32 }
    })
    .await;
    let denied = client
        .send_command(authed(OPERATOR, command(2, "start", vec![])))
        .await
        .unwrap()
        .into_inner();
    let Outcome::Denied(denial) = outcome(denied.verdict) else {
        panic!("expected a denial")
    };
    assert_eq!(denial.governor, "overtemp");
    assert!(denied.applied.is_empty());

    // The planner's commands are recorded as the planner's.
    let planned = client
        .send_command(authed(PLANNER, set_speed(3, 1400.0)))
        .await
        .unwrap()
        .into_inner();
    let origin = planned.origin.unwrap();
    assert_eq!(
        (origin.kind, origin.principal.as_str()),
        (pb::OriginKind::Planner as i32, "fleet")
    );

    // A retry with the same key returns the first outcome and actuates nothing.
    let mut keyed = set_speed(3, 1300.0);
    keyed.idempotency_key = "retry-1300".into();
    let first = client
        .send_command(authed(OPERATOR, keyed.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .send_command(authed(OPERATOR, keyed.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.command_id, "retry-1300");
    assert!(!first.replayed);
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.command_id, first.command_id);
    assert_eq!(again.audit_seq, first.audit_seq);
    assert_eq!(again.version, first.version);
    assert_eq!(again.applied, first.applied);
    assert_eq!(twin(client, 3).await.version, first.version);
    let mut actuated: HashMap<String, usize> = HashMap::new();
    while let Ok(actuation) = actuations.try_recv() {
        *actuated
            .entry(actuation.command_id().0.clone())
            .or_default() += 1;
    }
    assert_eq!(actuated.get("retry-1300"), Some(&1), "{actuated:?}");
    let keyed_records = audit_all(client, &press(3).to_string())
        .await
        .into_iter()
        .filter(|r| r.command_id == "retry-1300")
        .count();
    assert_eq!(keyed_records, 1);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_simulate_projects_and_changes_nothing() {
    let mut served = serve().await;
    let twins = served.runtime.twins().clone();
    let source = twins.source("api-test").unwrap();
    support::ingest_durable(&twins, &press(1), "temperature", reading(60.0, source, 1)).await;
    let client = &mut served.client;
    let before = twin(client, 1).await;
    let audit_before = audit_all(client, "").await.len();
    let mut actuations = twins.actuations();

    let request = |horizon: Option<Duration>, step: Option<Duration>| pb::SimulateRequest {
        asset_path: press(1).to_string(),
        command: "set_speed".into(),
        params: vec![named_value("rpm", Value::Float(2000.0))],
        horizon: horizon.map(duration_to_proto),
        step: step.map(duration_to_proto),
    };
    let what_if = client
        .simulate(authed(
            VIEWER,
            request(Some(Duration::from_secs(120)), Some(Duration::from_secs(2))),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(what_if.verdict), Outcome::Accepted(_)));
    assert!(
        what_if
            .assumed
            .contains(&named_value("speed", Value::Float(2000.0)))
    );
    let temperature = what_if
        .series
        .iter()
        .find(|s| s.name == "temperature")
        .expect("the thermal model projects the temperature");
    assert!(
        temperature.points.len() >= 50,
        "{}",
        temperature.points.len()
    );
    assert!(temperature.points.windows(2).all(|w| w[0].t < w[1].t));
    assert!(!what_if.models.is_empty());

    // Defaults (10 min, step horizon / 60), and a clamp the governors would apply.
    let defaulted = client
        .simulate(authed(VIEWER, request(None, None)))
        .await
        .unwrap()
        .into_inner();
    let points = &defaulted
        .series
        .iter()
        .find(|s| s.name == "temperature")
        .unwrap()
        .points;
    assert!(
        (600.0 - points.last().unwrap().t).abs() < 11.0,
        "{points:?}"
    );
    let mut too_fast = request(None, None);
    too_fast.params = vec![named_value("rpm", Value::Float(2900.0))];
    let clamped = client
        .simulate(authed(VIEWER, too_fast))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(clamped.verdict), Outcome::Clamped(_)));

    for (horizon, step, field) in [
        (Some(Duration::from_millis(500)), None, "horizon"),
        (Some(Duration::from_secs(25 * 3600)), None, "horizon"),
        (
            Some(Duration::from_secs(100)),
            Some(Duration::from_millis(1)),
            "step",
        ),
        (
            Some(Duration::from_secs(100)),
            Some(Duration::from_secs(101)),
            "step",
        ),
    ] {
        invalid(
            client
                .simulate(authed(VIEWER, request(horizon, step)))
                .await,
            field,
        );
    }
    let mut negative = request(None, None);
    let mut horizon = duration_to_proto(Duration::ZERO);
    horizon.seconds = -5;
    negative.horizon = Some(horizon);
    invalid(client.simulate(authed(VIEWER, negative)).await, "horizon");

    let after = twin(client, 1).await;
    assert_eq!(after.version, before.version, "a what-if changed the twin");
    assert_eq!(after.desired, before.desired);
    assert_eq!(audit_all(client, "").await.len(), audit_before);
    assert!(
        actuations.try_recv().is_err(),
        "a what-if actuated something"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_history_and_audit_pages() {
    let mut served = serve().await;
    let twins = served.runtime.twins().clone();
    let source = twins.source("api-test").unwrap();
    for seq in 1..=20u64 {
        support::ingest_durable(
            &twins,
            &press(1),
            "temperature",
            reading(40.0 + seq as f64, source, seq),
        )
        .await;
    }
    let client = &mut served.client;
    let history = |limit: i32, channel: &str| pb::GetHistoryRequest {
        asset_path: press(1).to_string(),
        channel: channel.into(),
        limit,
        ..Default::default()
    };
    let newest = client
        .get_history(authed(VIEWER, history(5, "temperature")))
        .await
        .unwrap()
        .into_inner();
    let values: Vec<f64> = newest.samples.iter().map(|s| s.value).collect();
    assert_eq!(
        values,
        [56.0, 57.0, 58.0, 59.0, 60.0],
        "the newest, oldest first"
    );
    assert_eq!(newest.samples[4].seq, 20);
    assert_eq!(newest.samples[0].quality, pb::Quality::Good as i32);
    let all = client
        .get_history(authed(VIEWER, history(0, "temperature")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.samples.len(), 20);
    let mut ranged = history(0, "temperature");
    ranged.from = all.samples[9].source_time;
    ranged.to = all.samples[11].source_time;
    let ranged = client
        .get_history(authed(VIEWER, ranged))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ranged.samples.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    let empty = client
        .get_history(authed(VIEWER, history(0, "vibration")))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.samples.is_empty());
    for limit in [-1, 10_001, i32::MIN] {
        invalid(
            client
                .get_history(authed(VIEWER, history(limit, "temperature")))
                .await,
            "limit",
        );
    }
    refused(
        client
            .get_history(authed(VIEWER, history(0, "pressure")))
            .await,
        Code::NotFound,
    );
    invalid(
        client.get_history(authed(VIEWER, history(0, ""))).await,
        "channel",
    );
    let mut backwards = history(0, "temperature");
    backwards.from = all.samples[11].source_time;
    backwards.to = all.samples[9].source_time;
    invalid(client.get_history(authed(VIEWER, backwards)).await, "from");

    // Seven commands over three twins, read back three records a page.
    for (n, rpm) in [
        (1, 1000.0),
        (2, 1100.0),
        (3, 1200.0),
        (1, 1300.0),
        (3, 1400.0),
        (2, 1500.0),
        (1, 1600.0),
    ] {
        client
            .send_command(authed(OPERATOR, set_speed(n, rpm)))
            .await
            .unwrap();
    }
    let mut records = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_audit(authed(
                VIEWER,
                pb::ListAuditRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.records.len() <= 3);
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(records.len(), 7);
    assert!(
        records.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first, each once"
    );
    let rpms: Vec<Option<Value>> = records
        .iter()
        .map(|r| {
            r.requested[0]
                .value
                .as_ref()
                .and_then(doppel_api::convert::value_from_proto)
        })
        .collect();
    assert_eq!(rpms[0], Some(Value::Float(1000.0)));
    assert_eq!(rpms[6], Some(Value::Float(1600.0)));
    assert!(
        records
            .iter()
            .all(|r| r.kind == pb::AuditKind::Command as i32)
    );
    assert_eq!(records[0].origin.as_ref().unwrap().principal, "olga");

    let line2 = audit_all(client, "acme/plant-a/line-2").await;
    assert_eq!(line2.len(), 2);
    assert!(line2.iter().all(|r| r.asset_path == press(3).to_string()));
    let mut windowed = pb::ListAuditRequest {
        from: records[2].at,
        to: records[4].at,
        ..Default::default()
    };
    let window = client
        .list_audit(authed(VIEWER, windowed.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(window.records.len() >= 3, "{:?}", window.records);
    windowed.page_token = "0123456789abcdef0123456789abcdef0123456789".into();
    invalid(
        client.list_audit(authed(VIEWER, windowed)).await,
        "page_token",
    );
    for size in [-1, 1001] {
        invalid(
            client
                .list_audit(authed(
                    VIEWER,
                    pb::ListAuditRequest {
                        page_size: size,
                        ..Default::default()
                    },
                ))
                .await,
            "page_size",
        );
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_every_error_with_its_code() {
    let mut served = serve().await;
    let twins = served.runtime.twins().clone();
    let client = &mut served.client;
    let mut actuations = twins.actuations();

    // NOT_FOUND: unknown asset, command, channel.
    let unknown = pb::GetTwinRequest {
        asset_path: "acme/plant-a/line-9/press-9".into(),
    };
    let status = refused(
        client.get_twin(authed(VIEWER, unknown)).await,
        Code::NotFound,
    );
    assert!(status.message().contains("line-9/press-9"), "{status:?}");
    refused(
        client
            .send_command(authed(OPERATOR, command(1, "explode", vec![])))
            .await,
        Code::NotFound,
    );
    let mut unknown_asset = set_speed(1, 1000.0);
    unknown_asset.asset_path = "acme/nowhere".into();
    refused(
        client.send_command(authed(OPERATOR, unknown_asset)).await,
        Code::NotFound,
    );

    // INVALID_ARGUMENT naming the field.
    for bad in ["", "acme//press", "acme/press 1", "acme/é", "/acme"] {
        invalid(
            client
                .get_twin(authed(
                    VIEWER,
                    pb::GetTwinRequest {
                        asset_path: bad.into(),
                    },
                ))
                .await,
            "asset_path",
        );
    }
    invalid(
        client
            .send_command(authed(
                OPERATOR,
                command(1, "set_speed", vec![named_value("rpm", Value::Bool(true))]),
            ))
            .await,
        "params",
    );
    invalid(
        client
            .send_command(authed(OPERATOR, command(1, "set_speed", vec![])))
            .await,
        "params",
    );
    invalid(
        client
            .send_command(authed(
                OPERATOR,
                command(1, "set_speed", vec![named_value("torque", Value::Int(3))]),
            ))
            .await,
        "params",
    );
    let no_value = pb::NamedValue {
        name: "rpm".into(),
        value: None,
    };
    invalid(
        client
            .send_command(authed(OPERATOR, command(1, "set_speed", vec![no_value])))
            .await,
        "params[0].value",
    );
    let mut long_key = set_speed(1, 1000.0);
    long_key.idempotency_key = "k".repeat(129);
    invalid(
        client.send_command(authed(OPERATOR, long_key)).await,
        "idempotency_key",
    );
    let mut bad_deadline = set_speed(1, 1000.0);
    let mut at = timestamp_to_proto(doppel::Timestamp::now());
    at.nanos = -1;
    bad_deadline.deadline = Some(at);
    invalid(
        client.send_command(authed(OPERATOR, bad_deadline)).await,
        "deadline",
    );

    // DEADLINE_EXCEEDED: past the request's deadline, or the gRPC timeout's.
    let mut late = set_speed(1, 1000.0);
    late.deadline = Some(timestamp_to_proto(
        doppel::Timestamp::now().minus(Duration::from_secs(1)),
    ));
    let status = refused(
        client.send_command(authed(OPERATOR, late)).await,
        Code::DeadlineExceeded,
    );
    assert!(status.message().contains("set_speed"), "{status:?}");
    let mut hurried = authed(OPERATOR, set_speed(1, 1000.0));
    hurried.set_timeout(Duration::from_nanos(1));
    let status = client.send_command(hurried).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let mut timely = authed(OPERATOR, set_speed(1, 1000.0));
    timely.set_timeout(Duration::from_secs(10));
    client.send_command(timely).await.unwrap();
    let mut actuated = Vec::new();
    while let Ok(actuation) = actuations.try_recv() {
        actuated.push(actuation.values().to_vec());
    }
    assert_eq!(
        actuated,
        [vec![("speed".to_string(), Value::Float(1000.0))]],
        "only the timely command was actuated"
    );

    // RESOURCE_EXHAUSTED is covered by the watch tests; UNAVAILABLE once the twins stop.
    let Served {
        _dir,
        runtime,
        api,
        mut client,
    } = served;
    runtime.shutdown().await;
    refused(
        client.get_twin(authed(VIEWER, get(1))).await,
        Code::Unavailable,
    );
    refused(
        client
            .send_command(authed(OPERATOR, set_speed(1, 900.0)))
            .await,
        Code::Unavailable,
    );
    within("the API stops", api.stop()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_watch_reports_a_twin_restart_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let types = format!(
        "{}\n[[types.press.models]]\nkind = \"fragile\"\n",
        support::types()
    );
    let runtime = support::start_custom(dir.path(), &types, support::settings(), |b| {
        b.model("fragile", fragile)
    })
    .await;
    let mut served = serve_runtime(dir, runtime, ApiLimits::default()).await;
    let twins = served.runtime.twins().clone();
    let mut stream = served
        .client
        .watch_twins(authed(
            VIEWER,
            pb::WatchTwinsRequest {
                path_prefix: press(1).to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut stream).await, Event::Snapshot(_)));
    assert!(matches!(
        next(&mut stream).await,
        Event::SnapshotComplete(_)
    ));
    let source = twins.source("api-test").unwrap();
    let poisoned = twins
        .ingest(&press(1), "vibration", reading(13.0, source, 1))
        .await
        .unwrap()
        .durable()
        .await;
    assert!(poisoned.is_err(), "the crashing sample is not acknowledged");
    let restarted = loop {
        let Event::Change(change) = next(&mut stream).await else {
            panic!("only changes follow the snapshot")
        };
        if matches!(change.change, Some(pb::twin_change::Change::Restarted(_))) {
            break change;
        }
    };
    assert_eq!(restarted.asset_path, press(1).to_string());
    support::wait_until("press-1 answers again", STEP, || {
        let mut client = served.client.clone();
        async move { client.get_twin(authed(VIEWER, get(1))).await.is_ok() }
    })
    .await;
    served
        .client
        .send_command(authed(OPERATOR, set_speed(1, 1250.0)))
        .await
        .unwrap();
    loop {
        let Event::Change(change) = next(&mut stream).await else {
            panic!("only changes follow the snapshot")
        };
        if matches!(change.change, Some(pb::twin_change::Change::Desired(_))) {
            assert!(change.version > restarted.version);
            break;
        }
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_roles_allow_and_refuse_what_they_should() {
    let mut served = serve().await;
    let client = &mut served.client;
    let watch = || pb::WatchTwinsRequest {
        path_prefix: press(1).to_string(),
    };
    let simulate = || pb::SimulateRequest {
        asset_path: press(1).to_string(),
        command: "stop".into(),
        ..Default::default()
    };
    let history = || pb::GetHistoryRequest {
        asset_path: press(1).to_string(),
        channel: "temperature".into(),
        ..Default::default()
    };
    for token in [VIEWER, OPERATOR, PLANNER, ADMIN] {
        client.get_twin(authed(token, get(1))).await.unwrap();
        client
            .list_twins(authed(token, pb::ListTwinsRequest::default()))
            .await
            .unwrap();
        let mut stream = client
            .watch_twins(authed(token, watch()))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(next(&mut stream).await, Event::Snapshot(_)));
        client.simulate(authed(token, simulate())).await.unwrap();
        client.get_history(authed(token, history())).await.unwrap();
        client
            .list_audit(authed(token, pb::ListAuditRequest::default()))
            .await
            .unwrap();
    }
    let status = refused(
        client
            .send_command(authed(VIEWER, set_speed(1, 1000.0)))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("vera"), "{status:?}");
    for (token, kind, principal) in [
        (OPERATOR, pb::OriginKind::Operator, "olga"),
        (PLANNER, pb::OriginKind::Planner, "fleet"),
        (ADMIN, pb::OriginKind::Operator, "root"),
    ] {
        let answer = client
            .send_command(authed(token, set_speed(1, 1000.0)))
            .await
            .unwrap()
            .into_inner();
        let origin = answer.origin.unwrap();
        assert_eq!(
            (origin.kind, origin.principal.as_str()),
            (kind as i32, principal)
        );
    }

    // No token, an unknown token, another scheme: UNAUTHENTICATED, token never echoed.
    refused(
        client.get_twin(Request::new(get(1))).await,
        Code::Unauthenticated,
    );
    let wrong = refused(
        client
            .get_twin(authed("operator-token-0123456788", get(1)))
            .await,
        Code::Unauthenticated,
    );
    assert!(!wrong.message().contains("0123456788"), "{wrong:?}");
    let mut basic = Request::new(get(1));
    basic
        .metadata_mut()
        .insert("authorization", "Basic b2xnYTpzZWNyZXQ=".parse().unwrap());
    refused(client.get_twin(basic).await, Code::Unauthenticated);
    refused(
        client.watch_twins(Request::new(watch())).await,
        Code::Unauthenticated,
    );
    refused(
        client.send_command(authed("", set_speed(1, 1000.0))).await,
        Code::Unauthenticated,
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_health_and_reflection_without_a_token() {
    use doppel_api::health::pb::HealthCheckRequest;
    use doppel_api::health::pb::health_check_response::ServingStatus;
    use doppel_api::health::pb::health_client::HealthClient;
    use doppel_api::reflection::pb::v1::ServerReflectionRequest;
    use doppel_api::reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use doppel_api::reflection::pb::v1::server_reflection_request::MessageRequest;
    use doppel_api::reflection::pb::v1::server_reflection_response::MessageResponse;

    let served = serve().await;
    let channel = connect(&served.api).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "doppel.v1.TwinService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service}");
    }
    refused(
        health
            .check(HealthCheckRequest {
                service: "doppel.v1.Nothing".into(),
            })
            .await,
        Code::NotFound,
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = reflection
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "doppel.v1.TwinService".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = within("reflection", answers.message())
        .await
        .unwrap()
        .unwrap()
        .message_response
    else {
        panic!("expected the service list")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "doppel.v1.TwinService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        within("reflection", answers.message())
            .await
            .unwrap()
            .unwrap()
            .message_response
    else {
        panic!("expected the file descriptor")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let raw = &files.file_descriptor_proto[0];
    assert!(
        raw.windows(b"doppel/v1/twin.proto".len())
            .any(|w| w == b"doppel/v1/twin.proto")
    );

    // The older reflection protocol, for clients that only speak it.
    {
        use doppel_api::reflection::pb::v1alpha::ServerReflectionRequest;
        use doppel_api::reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use doppel_api::reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use doppel_api::reflection::pb::v1alpha::server_reflection_response::MessageResponse;

        let mut reflection = ServerReflectionClient::new(connect(&served.api).await);
        let mut answers = reflection
            .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                },
            ]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            within("reflection v1alpha", answers.message())
                .await
                .unwrap()
                .unwrap()
                .message_response
        else {
            panic!("expected the service list")
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            "doppel.v1.TwinService",
            "doppel.v1.StatusService",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(names.contains(&expected), "{names:?}");
        }
    }
    served.stop().await;
}

/// A client that compresses its requests (gzip or zstd) and accepts compressed
/// answers is served like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_calls_are_answered() {
    use tonic::codec::CompressionEncoding;

    let served = serve().await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = TwinServiceClient::new(connect(&served.api).await)
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let twin = client
            .get_twin(authed(
                VIEWER,
                pb::GetTwinRequest {
                    asset_path: press(1).to_string(),
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("{encoding:?}: {status:?}"))
            .into_inner()
            .twin
            .unwrap();
        assert_eq!(twin.asset_path, press(1).to_string(), "{encoding:?}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_malformed_requests_and_keeps_serving() {
    let mut served = serve().await;
    let client = &mut served.client;

    // Huge strings: over the field limits, and over the message limit.
    invalid(
        client
            .get_twin(authed(
                VIEWER,
                pb::GetTwinRequest {
                    asset_path: "a".repeat(100 * 1024),
                },
            ))
            .await,
        "asset_path",
    );
    invalid(
        client
            .send_command(authed(OPERATOR, command(1, &"x".repeat(4096), vec![])))
            .await,
        "command",
    );
    invalid(
        client
            .send_command(authed(
                OPERATOR,
                command(
                    1,
                    "set_speed",
                    vec![named_value(&"p".repeat(2000), Value::Int(1))],
                ),
            ))
            .await,
        "params[0].name",
    );
    invalid(
        client
            .list_twins(authed(
                VIEWER,
                pb::ListTwinsRequest {
                    twin_type: "t".repeat(5000),
                    ..Default::default()
                },
            ))
            .await,
        "twin_type",
    );
    invalid(
        client
            .get_history(authed(
                VIEWER,
                pb::GetHistoryRequest {
                    asset_path: press(1).to_string(),
                    channel: "c".repeat(70_000),
                    ..Default::default()
                },
            ))
            .await,
        "channel",
    );
    let too_big = client
        .get_twin(authed(
            VIEWER,
            pb::GetTwinRequest {
                asset_path: "a".repeat(3 << 20),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted, "{too_big:?}");
    assert!(too_big.message().contains("limit"), "{too_big:?}");
    let many_params: Vec<pb::NamedValue> = (0..100)
        .map(|i| named_value(&format!("p{i}"), Value::Int(i)))
        .collect();
    invalid(
        client
            .send_command(authed(OPERATOR, command(1, "set_speed", many_params)))
            .await,
        "params",
    );

    // Negative page sizes.
    for size in [-1, -5, i32::MIN] {
        invalid(
            client
                .list_twins(authed(
                    VIEWER,
                    pb::ListTwinsRequest {
                        page_size: size,
                        ..Default::default()
                    },
                ))
                .await,
            "page_size",
        );
    }

    // A value whose kind this server does not know arrives as an empty value; a
    // non-finite float is refused as well.
    let unknown_kind = pb::NamedValue {
        name: "rpm".into(),
        value: Some(pb::Value { kind: None }),
    };
    invalid(
        client
            .send_command(authed(
                OPERATOR,
                command(1, "set_speed", vec![unknown_kind]),
            ))
            .await,
        "params[0].value",
    );
    invalid(
        client
            .simulate(authed(
                VIEWER,
                pb::SimulateRequest {
                    asset_path: press(1).to_string(),
                    command: "set_speed".into(),
                    params: vec![named_value("rpm", Value::Float(f64::INFINITY))],
                    ..Default::default()
                },
            ))
            .await,
        "params[0].value",
    );

    // Still serving, and nothing changed.
    let press1 = twin(client, 1).await;
    assert_eq!(press1.version, 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ends_a_slow_watcher_without_slowing_the_twins() {
    let mut served = serve_with(ApiLimits {
        watch_buffer: 8,
        watch_stall_ms: 200,
        max_watches: 2,
        ..ApiLimits::default()
    })
    .await;
    let twins = served.runtime.twins().clone();
    let watch = || {
        authed(
            VIEWER,
            pb::WatchTwinsRequest {
                path_prefix: press(1).to_string(),
            },
        )
    };
    // HTTP/2 buffers what a client does not read: with the smallest windows, only a
    // few thousand changes fit in flight.
    let narrow = Endpoint::from_shared(served.api.url())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut slow_client = TwinServiceClient::new(narrow);
    let mut slow = slow_client.watch_twins(watch()).await.unwrap().into_inner();
    assert!(matches!(next(&mut slow).await, Event::Snapshot(_)));
    assert!(matches!(next(&mut slow).await, Event::SnapshotComplete(_)));
    let _second = slow_client.watch_twins(watch()).await.unwrap();
    let status = refused(
        served.client.watch_twins(watch()).await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("at most 2 watches"), "{status:?}");

    // The watchers read nothing while the twin takes 40,000 readings.
    let started = Instant::now();
    burst(&twins, "api-test", 40).await;
    let ingest = started.elapsed();
    assert_eq!(twin(&mut served.client, 1).await.version, 40_000);

    let mut delivered = 0usize;
    let ended = loop {
        match within("the slow watch ends", slow.message()).await {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("the slow watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert!(ended.message().contains("watcher too slow"), "{ended:?}");
    assert!(delivered < 40_000, "{delivered}");
    // The second watcher never read either: the server ended and released both.
    support::wait_until("both slow watches are released", STEP, || {
        let open = served.api.open_watches();
        async move { open == 0 }
    })
    .await;
    let mut again = served
        .client
        .watch_twins(watch())
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut again).await, Event::Snapshot(_)));
    eprintln!(
        "slow watcher: 40,000 readings durable in {ingest:?}; {delivered} changes delivered before it was ended"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_survives_ten_thousand_concurrent_watches() {
    const WATCHES: usize = 10_000;
    const CONNECTIONS: usize = 16;
    let mut served = serve().await;
    let started = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(connect(&served.api).await);
    }
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..WATCHES {
        let mut client = TwinServiceClient::new(channels[i % CONNECTIONS].clone());
        let prefix = press(1 + (i % 3) as u32).to_string();
        opening.spawn(async move {
            let mut stream = client
                .watch_twins(authed(
                    VIEWER,
                    pb::WatchTwinsRequest {
                        path_prefix: prefix,
                    },
                ))
                .await?
                .into_inner();
            for _ in 0..2 {
                stream.message().await?;
            }
            Ok::<_, Status>((i, stream))
        });
    }
    let mut streams = Vec::with_capacity(WATCHES);
    let collect = async {
        while let Some(joined) = opening.join_next().await {
            streams.push(joined.unwrap().unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("10,000 watches open within a minute");
    let opened = started.elapsed();
    assert_eq!(streams.len(), WATCHES);
    assert_eq!(served.api.open_watches(), WATCHES);

    let answered = Instant::now();
    let press1 = twin(&mut served.client, 1).await;
    let get_latency = answered.elapsed();
    assert!(get_latency < Duration::from_secs(2), "{get_latency:?}");
    let sent = served
        .client
        .send_command(authed(OPERATOR, set_speed(1, 1800.0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.version, press1.version + 1);
    // Every watcher of press-1 sees the change; check a hundred of them.
    let mut checked = 0;
    for (i, stream) in streams.iter_mut() {
        if *i % 3 != 0 {
            continue;
        }
        let Event::Change(change) = next(stream).await else {
            panic!("watch {i} expected a change")
        };
        assert_eq!(change.version, sent.version);
        checked += 1;
        if checked == 100 {
            break;
        }
    }
    drop(streams);
    support::wait_until("every watch is released", Duration::from_secs(30), || {
        let open = served.api.open_watches();
        async move { open == 0 }
    })
    .await;
    twin(&mut served.client, 2).await;
    eprintln!(
        "10,000 watches: opened in {opened:?}, GetTwin meanwhile in {get_latency:?}, all released after {:?}",
        started.elapsed()
    );
    served.stop().await;
}

/// Reads a child's stdout lines on a thread, so a test can wait for one.
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            Err(_) => panic!("no such line; the output so far:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_dev_serves_the_api_with_the_token_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(env!("CARGO_BIN_EXE_doppel"))
        .args([
            "dev",
            "--duration",
            "8",
            "--mqtt-port",
            "0",
            "--grpc",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let export = wait_for_line(&lines, &mut seen, |l| l.trim_start().starts_with("export "));
    let mut vars = HashMap::new();
    for pair in export.trim().trim_start_matches("export ").split(' ') {
        let (name, value) = pair.split_once('=').unwrap();
        vars.insert(name.to_string(), value.to_string());
    }
    let token = &vars["DOPPEL_TOKEN"];
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev-token"))
            .unwrap()
            .trim(),
        token
    );
    let channel = Endpoint::from_shared(vars["DOPPEL_ADDR"].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TwinServiceClient::new(channel);
    let listed = client
        .list_twins(authed(token, pb::ListTwinsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.twins.len(), 10);
    let answer = client
        .send_command(authed(
            token,
            pb::SendCommandRequest {
                asset_path: "acme/plant-a/line-1/press-1".into(),
                command: "set_speed".into(),
                params: vec![named_value("rpm", Value::Float(1000.0))],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.verdict.is_some());
    refused(
        client
            .list_twins(authed(
                "not-the-dev-token-at-all",
                pb::ListTwinsRequest::default(),
            ))
            .await,
        Code::Unauthenticated,
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_node_serves_the_api_of_its_config() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    let dir = tempfile::tempdir().unwrap();
    for file in ["types.toml", "plant.toml"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            r#"
[node]
data_dir = "data"
types = "types.toml"
plant = "plant.toml"

[api]
listen = "127.0.0.1:0"
tokens = [{{ name = "ann", token = "{OPERATOR}", role = "operator" }}]
"#
        ),
    )
    .unwrap();
    let shipped = doppel::NodeConfig::from_file(example.join("node.toml")).unwrap();
    assert!(
        shipped.api.is_none(),
        "the example's [api] is commented out"
    );

    let mut child = Process::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["node", "--duration", "6", "--config"])
        .arg(dir.path().join("node.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let line = wait_for_line(&lines, &mut seen, |l| l.contains("gRPC API"));
    let url = line.rsplit(' ').next().unwrap().to_string();
    let channel = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut client = TwinServiceClient::new(channel);
    let listed = client
        .list_twins(authed(OPERATOR, pb::ListTwinsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.twins.len(), 3);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", seen.join("\n"));

    // A bad [api] table is refused when the config is read.
    let bad = doppel::NodeConfig::from_toml(
        "[node]\ndata_dir = \"d\"\ntypes = \"t\"\nplant = \"p\"\n[api]\nlisten = \"127.0.0.1:0\"\ntokens = [{ name = \"x\", token = \"short\", role = \"viewer\" }]\n",
        &dir.path().join("node.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("api.tokens[0].token"), "{bad}");
    assert!(!bad.contains("short"), "{bad}");
}

/// A channel past its maximum age shows as stale over gRPC: in GetTwin with its
/// condition, and in WatchTwins as a change of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shows_a_stale_channel_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let types = support::types().replace(
        "[types.press.channels.vibration]\n",
        "[types.press.channels.vibration]\nmax_age_secs = 0.5\n",
    );
    let mut settings = support::settings();
    settings.max_age_secs = 0.0;
    let runtime = support::start_custom(dir.path(), &types, settings, |b| b).await;
    let mut served = serve_runtime(dir, runtime, ApiLimits::default()).await;
    let mut stream = within(
        "WatchTwins",
        served.client.watch_twins(authed(
            VIEWER,
            pb::WatchTwinsRequest {
                path_prefix: press(1).to_string(),
            },
        )),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(matches!(next(&mut stream).await, Event::Snapshot(_)));
    assert!(matches!(
        next(&mut stream).await,
        Event::SnapshotComplete(_)
    ));
    let twins = served.runtime.twins().clone();
    let source = twins.source("api-test").unwrap();
    support::ingest_durable(&twins, &press(1), "vibration", reading(2.5, source, 1)).await;

    let condition = loop {
        let Event::Change(change) = next(&mut stream).await else {
            panic!("expected changes")
        };
        if let Some(pb::twin_change::Change::Condition(condition)) = change.change {
            break condition;
        }
    };
    assert_eq!(condition.channel, "vibration");
    let shown = condition.condition.unwrap();
    assert_eq!(shown.quality, pb::Quality::Stale as i32);
    assert!(
        shown.reason.starts_with("no reading for"),
        "{}",
        shown.reason
    );

    let twin = twin(&mut served.client, 1).await;
    let vibration = twin
        .reported
        .iter()
        .find(|r| r.channel == "vibration")
        .unwrap();
    let sample = vibration.sample.as_ref().unwrap();
    assert_eq!(sample.value, 2.5, "the last value is kept");
    assert_eq!(sample.quality, pb::Quality::Stale as i32);
    let condition = vibration.condition.as_ref().unwrap();
    assert_eq!(condition.quality, pb::Quality::Stale as i32);
    assert!(condition.since.is_some());
    served.stop().await;
}

/// AlarmService over loopback: the list with counts, responses by role, and every
/// refusal with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_alarms_are_listed_and_answered_by_people_only() {
    use doppel_proto::v1::alarm_service_client::AlarmServiceClient;

    let served = serve().await;
    let twins = served.runtime.twins().clone();
    let source = twins.source("api-alarms").unwrap();
    for (seq, channel) in [(1, "temperature"), (2, "temperature_b")] {
        support::ingest_durable(&twins, &press(2), channel, reading(120.0, source, seq)).await;
    }
    let mut alarms = AlarmServiceClient::new(connect(&served.api).await);
    let listed = within(
        "ListAlarms",
        alarms.list_alarms(authed(
            VIEWER,
            pb::ListAlarmsRequest {
                path_prefix: "acme/plant-a".into(),
                standing_only: true,
            },
        )),
    )
    .await
    .unwrap()
    .into_inner();
    let trip = listed
        .alarms
        .iter()
        .find(|a| a.alarm.as_ref().is_some_and(|a| a.code == "trip:overtemp"))
        .expect("the trip is listed");
    assert_eq!(trip.asset_path, press(2).to_string());
    let trip_alarm = trip.alarm.as_ref().unwrap();
    assert_eq!(trip_alarm.state, "unacknowledged");
    assert!(trip_alarm.active && trip_alarm.acknowledged.is_none());
    let counts = listed.counts.unwrap();
    assert!(
        counts.standing >= 1 && counts.unacknowledged >= 1,
        "{counts:?}"
    );

    let ack = |token: &str, code: &str| {
        authed(
            token,
            pb::AcknowledgeAlarmRequest {
                asset_path: press(2).to_string(),
                code: code.into(),
                note: "crew on the way".into(),
            },
        )
    };
    for token in [VIEWER, PLANNER] {
        let status = refused(
            within(
                "viewer ack",
                alarms.acknowledge_alarm(ack(token, "trip:overtemp")),
            )
            .await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("operator or admin"), "{status:?}");
    }
    refused(
        within(
            "unknown alarm",
            alarms.acknowledge_alarm(ack(OPERATOR, "nope")),
        )
        .await,
        Code::NotFound,
    );
    let shelve = |for_an_hour: bool| {
        authed(
            OPERATOR,
            pb::ShelveAlarmRequest {
                asset_path: press(2).to_string(),
                code: "trip:overtemp".into(),
                reason: "nuisance".into(),
                duration: for_an_hour.then(|| duration_to_proto(Duration::from_secs(3600))),
            },
        )
    };
    refused(
        within("no duration", alarms.shelve_alarm(shelve(false))).await,
        Code::InvalidArgument,
    );
    let status = refused(
        within("shelve a trip", alarms.shelve_alarm(shelve(true))).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("latched trip"), "{status:?}");

    let answered = within(
        "ack",
        alarms.acknowledge_alarm(ack(OPERATOR, "trip:overtemp")),
    )
    .await
    .unwrap()
    .into_inner();
    let alarm = answered.alarm.unwrap();
    assert_eq!(alarm.state, "acknowledged");
    assert_eq!(alarm.acknowledged.unwrap().by, "olga");
    assert!(answered.audit_seq > 0);
    refused(
        within(
            "ack again",
            alarms.acknowledge_alarm(ack(OPERATOR, "trip:overtemp")),
        )
        .await,
        Code::FailedPrecondition,
    );
    refused(
        within(
            "unknown twin",
            alarms.acknowledge_alarm(authed(
                OPERATOR,
                pb::AcknowledgeAlarmRequest {
                    asset_path: "acme/plant-a/line-9/press-9".into(),
                    code: "trip:overtemp".into(),
                    note: String::new(),
                },
            )),
        )
        .await,
        Code::NotFound,
    );
    drop(twins);
    served.stop().await;
}

/// A watcher that keeps reading, slower than a burst of 5,000 changes arrives: it is
/// never ended; what it fell behind on arrives as the twin's state now, versions
/// never go back, and it ends at the twin's last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_a_watcher_that_keeps_reading_survives_a_burst_coalesced() {
    let served = serve_with(ApiLimits {
        watch_buffer: 8,
        watch_stall_ms: 5_000,
        ..ApiLimits::default()
    })
    .await;
    let twins = served.runtime.twins().clone();
    let mut client = served.client.clone();
    let mut stream = client
        .watch_twins(authed(
            VIEWER,
            pb::WatchTwinsRequest {
                path_prefix: press(1).to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut stream).await, Event::Snapshot(_)));
    assert!(matches!(
        next(&mut stream).await,
        Event::SnapshotComplete(_)
    ));
    let last = 5_000u64;
    let reader = tokio::spawn(async move {
        let (mut latest, mut coalesced) = (0u64, 0usize);
        while latest < last {
            let (version, whole) = match next(&mut stream).await {
                Event::Change(change) => (change.version, false),
                Event::Coalesced(twin) => (twin.version, true),
                other => panic!("{other:?}"),
            };
            assert!(version >= latest, "version {version} after {latest}");
            latest = version;
            coalesced += usize::from(whole);
            // A reader slower than the burst.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        coalesced
    });
    burst(&twins, "api-burst", 5).await;
    let coalesced = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the watcher reaches the last version")
        .unwrap();
    assert!(
        coalesced > 0,
        "the burst overran the queue and was coalesced"
    );
    drop(twins);
    served.stop().await;
}
