//! The REST/JSON API over loopback with a real HTTP client: every resource, the
//! server-sent event watch (snapshot, then ordered changes), every error status, each
//! role, TLS, the console's files, and the OpenAPI document validated (by Python's
//! `openapi-spec-validator` and `jsonschema`) against every answer the test received.

use std::collections::BTreeSet;
use std::time::Duration;

use doppel::{Runtime, Timestamp};
use doppel_api::convert::timestamp_to_proto;
use doppel_api::{ApiConfig, ApiHandle, ApiLimits, ApiServer, Role};
use doppel_testkit::http::{Answer, Client, Events, segment};
use serde_json::{Value as Json, json};

use crate::support::{self, ingest_durable, press, reading, wait_until};

const VIEWER: &str = "http-viewer-token-0123456789";
const OPERATOR: &str = "http-operator-token-0123456789";
const PLANNER: &str = "http-planner-token-0123456789";
const ADMIN: &str = "http-admin-token-0123456789";

/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(15);

struct Served {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    api: ApiHandle,
    base: Client,
    /// Answers to check against the OpenAPI document: path template, method, answer.
    seen: Vec<(String, String, u16, Json)>,
}

fn config(limits: ApiLimits) -> ApiConfig {
    let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
        .token("vera", VIEWER, Role::Viewer)
        .token("olga", OPERATOR, Role::Operator)
        .token("fleet", PLANNER, Role::Planner)
        .token("root", ADMIN, Role::Admin)
        .http("127.0.0.1:0".parse().unwrap());
    config.limits = limits;
    config
}

/// The test press with a declared objective, for Recommend.
const RECOMMEND: &str = r#"
[types.press.recommend]
command = "set_speed"
param = "rpm"
values = [600, 1200, 1800]
maximize = "rpm"
constraints = [{ series = "temperature", max = 94.0 }]
"#;

async fn serve(limits: ApiLimits) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::settings();
    settings.models.allow_unsigned = true;
    let types = format!("{}{RECOMMEND}", support::types());
    let runtime = support::start_custom(dir.path(), &types, settings, |b| b).await;
    let api = ApiServer::start(config(limits), runtime.twins().clone())
        .await
        .unwrap();
    let base = Client::new(&format!("http://{}", api.http_addr().unwrap()), None);
    Served {
        _dir: dir,
        runtime,
        api,
        base,
        seen: Vec::new(),
    }
}

impl Served {
    fn as_(&self, token: &str) -> Client {
        self.base.with_token(token)
    }

    /// GET as `token`, recording the answer under `template`.
    async fn get(&mut self, token: &str, template: &str, path: &str) -> Answer {
        let answer = within(path, self.as_(token).get(path)).await;
        self.record(template, "get", &answer);
        answer
    }

    /// POST as `token`, recording the answer under `template`.
    async fn post(&mut self, token: &str, template: &str, path: &str, body: Json) -> Answer {
        let answer = within(path, self.as_(token).post(path, &body)).await;
        self.record(template, "post", &answer);
        answer
    }

    fn record(&mut self, template: &str, method: &str, answer: &Answer) {
        let body = serde_json::from_slice(&answer.body).unwrap_or(Json::Null);
        self.seen
            .push((template.into(), method.into(), answer.status, body));
    }

    async fn stop(self) {
        within("the API stops", self.api.stop()).await;
        self.runtime.shutdown().await;
    }
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn twin_url(n: u32) -> String {
    format!("/api/v1/twins/{}", segment(press(n).as_str()))
}

/// An RFC 3339 time `offset` seconds from now.
fn rfc3339(offset_secs: i64) -> String {
    let now = Timestamp::now();
    timestamp_to_proto(Timestamp(now.0 + offset_secs * 1_000_000)).to_string()
}

/// Asserts a problem answer: status, gRPC code name, content type.
fn problem(answer: &Answer, status: u16, code: &str) -> Json {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.header("content-type"), "application/problem+json");
    let body = answer.json();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_answers_and_the_openapi_document_describes_every_answer() {
    let mut served = serve(ApiLimits::default()).await;
    let twins = served.runtime.twins().clone();
    let source = twins.source("http-test").unwrap();
    for seq in 1..=3 {
        ingest_durable(
            &twins,
            &press(1),
            "temperature",
            reading(40.0 + seq as f64, source, seq),
        )
        .await;
    }

    // Who am I.
    let caller = served
        .get(OPERATOR, "/api/v1/caller", "/api/v1/caller")
        .await;
    assert_eq!(caller.status, 200, "{}", caller.text());
    assert_eq!(caller.json(), json!({"name": "olga", "role": "operator"}));

    // Listing, a page at a time.
    let page = served
        .get(
            VIEWER,
            "/api/v1/twins",
            "/api/v1/twins?pathPrefix=acme&pageSize=2",
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.json();
    assert_eq!(body["twins"].as_array().unwrap().len(), 2);
    assert_eq!(body["twins"][0]["assetPath"], press(1).as_str());
    assert_eq!(body["twins"][0]["runState"], "RUN_STATE_RUNNING");
    let token = body["nextPageToken"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let rest = served
        .get(
            VIEWER,
            "/api/v1/twins",
            &format!("/api/v1/twins?pathPrefix=acme&pageSize=2&pageToken={token}"),
        )
        .await
        .json();
    assert_eq!(rest["twins"][0]["assetPath"], press(3).as_str());
    assert_eq!(rest["nextPageToken"], "");

    // One twin, in the proto3 JSON mapping.
    let twin = served
        .get(VIEWER, "/api/v1/twins/{assetPath}", &twin_url(1))
        .await;
    assert_eq!(twin.status, 200, "{}", twin.text());
    let twin = twin.json()["twin"].clone();
    assert_eq!(twin["assetPath"], press(1).as_str());
    assert_eq!(twin["twinType"], "press");
    assert!(
        twin["version"].is_string(),
        "64-bit integers are strings: {twin}"
    );
    let temperature = twin["reported"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "temperature")
        .unwrap();
    assert_eq!(temperature["sample"]["value"], 43.0);
    assert_eq!(temperature["sample"]["quality"], "QUALITY_GOOD");

    // A command clamped by the envelope governor, previewed first with the same clamp.
    let params = json!([{"name": "rpm", "value": {"floatValue": 2800.0}}]);
    let preview = served
        .post(
            VIEWER,
            "/api/v1/twins/{assetPath}/simulate",
            &format!("{}/simulate", twin_url(1)),
            json!({"command": "set_speed", "params": params, "horizon": "60s"}),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text());
    let preview = preview.json();
    let clamp = &preview["verdict"]["clamped"]["clamps"][0];
    assert_eq!(clamp["applied"]["floatValue"], 2400.0, "{preview}");
    assert!(!preview["series"].as_array().unwrap().is_empty());
    let sent = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &format!("{}/commands", twin_url(1)),
            json!({"command": "set_speed", "params": params, "idempotencyKey": "http-1"}),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let sent = sent.json();
    assert_eq!(sent["verdict"]["clamped"]["clamps"][0], *clamp);
    assert_eq!(sent["applied"][0]["value"]["floatValue"], 2400.0);
    assert_eq!(sent["origin"]["kind"], "ORIGIN_KIND_OPERATOR");
    assert_eq!(sent["origin"]["principal"], "olga");
    let again = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &format!("{}/commands", twin_url(1)),
            json!({"command": "set_speed", "params": params, "idempotencyKey": "http-1"}),
        )
        .await
        .json();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["commandId"], sent["commandId"]);

    // History and audit.
    let history = served
        .get(
            VIEWER,
            "/api/v1/twins/{assetPath}/history",
            &format!(
                "{}/history?channel=temperature&from={}&limit=2",
                twin_url(1),
                rfc3339(-3600)
            ),
        )
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let samples: Vec<f64> = history.json()["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert_eq!(samples, [42.0, 43.0]);
    let audit = served
        .get(
            VIEWER,
            "/api/v1/audit",
            "/api/v1/audit?pathPrefix=acme/plant-a",
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    let audit = audit.json();
    let record = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "AUDIT_KIND_COMMAND")
        .expect("the command is audited");
    assert_eq!(record["commandId"], sent["commandId"]);
    assert_eq!(record["requested"][0]["value"]["floatValue"], 2800.0);

    // A twin type, for the console's command panel.
    let press_type = served
        .get(VIEWER, "/api/v1/types/{twinType}", "/api/v1/types/press")
        .await;
    assert_eq!(press_type.status, 200, "{}", press_type.text());
    let press_type = press_type.json();
    let set_speed = press_type["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "set_speed")
        .unwrap();
    assert_eq!(
        set_speed["params"][0],
        json!({"name": "rpm", "type": "float", "min": 0.0, "max": 3000.0, "unit": "rpm"})
    );

    // Alarms: a stale alarm acknowledged, shelved and unshelved; a trip not shelvable.
    twins.sources_lost(&[source], "broker lost");
    let stale = "stale:temperature";
    wait_until("the stale alarm", STEP, || async {
        twins
            .report(&press(1))
            .await
            .is_ok_and(|r| r.alarms.iter().any(|a| a.code == stale))
    })
    .await;
    let alarms = served.get(VIEWER, "/api/v1/alarms", "/api/v1/alarms").await;
    assert_eq!(alarms.status, 200, "{}", alarms.text());
    let alarms = alarms.json();
    assert!(
        alarms["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alarm"]["code"] == stale && a["alarm"]["state"] == "unacknowledged"),
        "{alarms}"
    );
    assert!(alarms["counts"]["unacknowledged"].as_u64().unwrap() >= 1);
    let alarm_url = |action: &str| format!("{}/alarms/{}/{action}", twin_url(1), segment(stale));
    let acked = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/alarms/{code}/acknowledge",
            &alarm_url("acknowledge"),
            json!({"note": "checking the broker"}),
        )
        .await;
    assert_eq!(acked.status, 200, "{}", acked.text());
    assert_eq!(acked.json()["alarm"]["state"], "acknowledged");
    let shelved = served
        .post(
            ADMIN,
            "/api/v1/twins/{assetPath}/alarms/{code}/shelve",
            &alarm_url("shelve"),
            json!({"reason": "broker maintenance", "duration": "600s"}),
        )
        .await;
    assert_eq!(shelved.status, 200, "{}", shelved.text());
    assert_eq!(shelved.json()["alarm"]["state"], "shelved");
    let unshelved = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/alarms/{code}/unshelve",
            &alarm_url("unshelve"),
            json!({}),
        )
        .await;
    assert_eq!(unshelved.status, 200, "{}", unshelved.text());
    assert_ne!(unshelved.json()["alarm"]["state"], "shelved");

    // The overview sums the lines up.
    let overview = served
        .get(VIEWER, "/api/v1/overview", "/api/v1/overview")
        .await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    let overview = overview.json();
    assert_eq!(overview["twins"], 3);
    let groups = overview["groups"].as_array().unwrap();
    assert_eq!(groups[0]["path"], "acme/plant-a/line-1");
    assert_eq!(groups[0]["twins"], 2);
    assert_eq!(groups[1]["path"], "acme/plant-a/line-2");
    assert_eq!(groups[0]["worstTwin"], press(1).as_str());
    assert_ne!(groups[0]["worstSeverity"], "SEVERITY_UNSPECIFIED");

    // The next best action.
    let recommended = served
        .post(
            VIEWER,
            "/api/v1/twins/{assetPath}/recommend",
            &format!("{}/recommend", twin_url(1)),
            json!({}),
        )
        .await;
    assert_eq!(recommended.status, 200, "{}", recommended.text());
    let recommended = recommended.json();
    assert_eq!(recommended["objective"], "maximize rpm");
    assert_eq!(recommended["candidates"].as_array().unwrap().len(), 3);

    // An operator annotates a candidate; the audit trail lists it by kind.
    let candidate = recommended["candidates"][0]["value"].as_f64().unwrap();
    let annotated = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/annotations",
            &format!("{}/annotations", twin_url(1)),
            json!({"annotation": {
                "recommendation": {
                    "command": recommended["command"],
                    "params": [{"name": recommended["param"], "value": {"floatValue": candidate}}],
                },
                "outcome": "ANNOTATION_OUTCOME_CONFIRMED",
                "note": "cooler by the end of the shift",
            }}),
        )
        .await;
    assert_eq!(annotated.status, 200, "{}", annotated.text());
    let record = &annotated.json()["record"];
    assert_eq!(record["kind"], "AUDIT_KIND_ANNOTATION");
    assert_eq!(
        record["annotation"]["outcome"],
        "ANNOTATION_OUTCOME_CONFIRMED"
    );
    let labels = served
        .get(
            VIEWER,
            "/api/v1/audit",
            "/api/v1/audit?kinds=AUDIT_KIND_ANNOTATION&kinds=AUDIT_KIND_SAFETY_ACTION",
        )
        .await;
    assert_eq!(labels.status, 200, "{}", labels.text());
    let labels = labels.json();
    let kinds: Vec<&str> = labels["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["AUDIT_KIND_ANNOTATION"], "{labels}");
    let refused = served
        .post(
            VIEWER,
            "/api/v1/twins/{assetPath}/annotations",
            &format!("{}/annotations", twin_url(1)),
            json!({"annotation": {"alarmCode": "x", "outcome": "ANNOTATION_OUTCOME_CONFIRMED"}}),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    // The model registry and a canary, rolled back by hand.
    let registered = served
        .post(
            ADMIN,
            "/api/v1/models/packages",
            "/api/v1/models/packages",
            json!({ "package": crate::support::degradation_package("1.1.0") }),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());
    assert_eq!(registered.json()["package"]["version"], "1.1.0");
    let packages = served
        .get(VIEWER, "/api/v1/models/packages", "/api/v1/models/packages")
        .await;
    assert_eq!(packages.json()["packages"].as_array().unwrap().len(), 1);
    let package = served
        .get(
            VIEWER,
            "/api/v1/models/packages/{kind}/{version}",
            "/api/v1/models/packages/degradation/1.1.0",
        )
        .await;
    assert_eq!(package.status, 200, "{}", package.text());
    assert_eq!(
        package.json()["package"]["compatibleWith"],
        json!(["1.0.0"])
    );
    let canary = json!({
        "kind": "degradation",
        "version": "1.1.0",
        "twinType": "press",
        "mode": "DEPLOY_MODE_CANARY",
        "canary": { "fraction": 0.5, "perLine": 1, "minDurationSecs": 3600.0 },
    });
    let denied = served
        .post(
            OPERATOR,
            "/api/v1/models/deployments",
            "/api/v1/models/deployments",
            canary.clone(),
        )
        .await;
    problem(&denied, 403, "PERMISSION_DENIED");
    let deployed = served
        .post(
            ADMIN,
            "/api/v1/models/deployments",
            "/api/v1/models/deployments",
            canary,
        )
        .await;
    assert_eq!(deployed.status, 200, "{}", deployed.text());
    let deployed = deployed.json();
    assert_eq!(
        deployed["deployment"]["rollout"]["state"],
        "ROLLOUT_STATE_RUNNING"
    );
    let id = deployed["deployment"]["id"].as_str().unwrap().to_string();
    let deployments = served
        .get(
            VIEWER,
            "/api/v1/models/deployments",
            "/api/v1/models/deployments",
        )
        .await;
    assert_eq!(
        deployments.json()["deployments"].as_array().unwrap().len(),
        1
    );
    let divergence = served
        .get(
            VIEWER,
            "/api/v1/models/deployments/{deployment}/divergence",
            &format!("/api/v1/models/deployments/{id}/divergence"),
        )
        .await;
    assert_eq!(divergence.status, 200, "{}", divergence.text());
    let decided = served
        .post(
            ADMIN,
            "/api/v1/models/deployments/{deployment}/decide",
            &format!("/api/v1/models/deployments/{id}/decide"),
            json!({ "promote": false, "reason": "not this week" }),
        )
        .await;
    assert_eq!(decided.status, 200, "{}", decided.text());
    assert_eq!(
        decided.json()["deployment"]["rollout"]["state"],
        "ROLLOUT_STATE_ROLLED_BACK"
    );
    let withdrawn = served
        .post(
            ADMIN,
            "/api/v1/models/deployments/{deployment}/withdraw",
            &format!("/api/v1/models/deployments/{id}/withdraw"),
            json!({ "reason": "again" }),
        )
        .await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text());

    // Node status; a node outside a cluster has no cluster status.
    let status = served.get(VIEWER, "/api/v1/status", "/api/v1/status").await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["twins"], "3");
    let cluster = served
        .get(VIEWER, "/api/v1/cluster", "/api/v1/cluster")
        .await;
    problem(&cluster, 404, "NOT_FOUND");

    // The document: valid OpenAPI 3.1, and every answer matches what it declares.
    let document = within("the document", served.base.get("/api/v1/openapi.json")).await;
    assert_eq!(document.status, 200);
    let document = document.json();
    let declared: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        // The watch is checked event by event below; the cluster resource by the
        // cluster test, on real cluster nodes.
        .filter(|(path, _)| {
            !["/api/v1/openapi.json", "/api/v1/watch", "/api/v1/cluster"].contains(&path.as_str())
        })
        .collect();
    let answered: BTreeSet<(String, String)> = served
        .seen
        .iter()
        .filter(|(_, _, status, _)| *status == 200)
        .map(|(path, method, _, _)| (path.clone(), method.clone()))
        .collect();
    assert_eq!(
        declared.difference(&answered).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "resources the test did not answer"
    );
    let answers: Vec<Json> = served
        .seen
        .iter()
        .map(|(path, method, status, body)| {
            json!({"path": path, "method": method, "status": status, "body": body})
        })
        .collect();
    validate_against_document(&document, &answers, &[]);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problems_with_the_status_their_grpc_code_maps_to() {
    let limits = ApiLimits {
        max_watches: 1,
        max_request_bytes: 4096,
        ..ApiLimits::default()
    };
    let mut served = serve(limits).await;
    let twins = served.runtime.twins().clone();
    let commands = format!("{}/commands", twin_url(1));
    let stop = json!({"command": "stop"});

    // Tokens: none, wrong, malformed.
    let none = within("no token", served.base.get("/api/v1/caller")).await;
    let body = problem(&none, 401, "UNAUTHENTICATED");
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["title"], "Unauthorized");
    assert!(none.header("www-authenticate").starts_with("Bearer"));
    let wrong = within(
        "wrong token",
        served.as_("not-a-token-of-this-node").get("/api/v1/caller"),
    )
    .await;
    problem(&wrong, 401, "UNAUTHENTICATED");
    let basic = within(
        "basic auth",
        served.base.send(
            "GET",
            "/api/v1/caller",
            &[("authorization", "Basic b2xnYTpwdw==")],
            None,
        ),
    )
    .await
    .unwrap();
    problem(&basic, 401, "UNAUTHENTICATED");

    // Roles: a viewer commands nothing, a planner responds to no alarm; an admin may.
    let viewer = served
        .post(
            VIEWER,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            stop.clone(),
        )
        .await;
    problem(&viewer, 403, "PERMISSION_DENIED");
    let ack = format!(
        "{}/alarms/{}/acknowledge",
        twin_url(1),
        segment("trip:overtemp")
    );
    let planner = served
        .post(
            PLANNER,
            "/api/v1/twins/{assetPath}/alarms/{code}/acknowledge",
            &ack,
            json!({}),
        )
        .await;
    problem(&planner, 403, "PERMISSION_DENIED");
    let planned = served
        .post(
            PLANNER,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            json!({"command": "start"}),
        )
        .await;
    assert_eq!(planned.status, 200, "{}", planned.text());
    assert_eq!(planned.json()["origin"]["kind"], "ORIGIN_KIND_PLANNER");
    let admin = served
        .post(
            ADMIN,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            stop.clone(),
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text());

    // Unknown twins, types, alarms and resources.
    let unknown = served
        .get(
            VIEWER,
            "/api/v1/twins/{assetPath}",
            &format!("/api/v1/twins/{}", segment("acme/plant-a/line-1/nope")),
        )
        .await;
    let body = problem(&unknown, 404, "NOT_FOUND");
    assert!(body["detail"].as_str().unwrap().contains("nope"), "{body}");
    problem(
        &served
            .get(VIEWER, "/api/v1/types/{twinType}", "/api/v1/types/pump")
            .await,
        404,
        "NOT_FOUND",
    );
    problem(
        &served
            .post(
                OPERATOR,
                "/api/v1/twins/{assetPath}/alarms/{code}/acknowledge",
                &ack,
                json!({}),
            )
            .await,
        404,
        "NOT_FOUND",
    );
    let nowhere = within(
        "an unknown resource",
        served.as_(VIEWER).get("/api/v1/pumps"),
    )
    .await;
    problem(&nowhere, 404, "NOT_FOUND");
    let method = within(
        "a wrong method",
        served.as_(VIEWER).post("/api/v1/caller", &json!({})),
    )
    .await;
    assert_eq!(method.status, 405, "{}", method.text());
    assert_eq!(method.header("content-type"), "application/problem+json");

    // Bad arguments: in the path, the query, the body; malformed and oversized bodies.
    let bad_path = served
        .get(
            VIEWER,
            "/api/v1/twins/{assetPath}",
            "/api/v1/twins/acme%2F%2Fpress",
        )
        .await;
    problem(&bad_path, 400, "INVALID_ARGUMENT");
    let bad_query = served
        .get(VIEWER, "/api/v1/twins", "/api/v1/twins?colour=red")
        .await;
    let body = problem(&bad_query, 400, "INVALID_ARGUMENT");
    assert!(
        body["detail"].as_str().unwrap().contains("pathPrefix"),
        "{body}"
    );
    let bad_size = served
        .get(VIEWER, "/api/v1/twins", "/api/v1/twins?pageSize=lots")
        .await;
    problem(&bad_size, 400, "INVALID_ARGUMENT");
    let missing = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            json!({"command": "set_speed"}),
        )
        .await;
    let body = problem(&missing, 400, "INVALID_ARGUMENT");
    assert!(body["detail"].as_str().unwrap().contains("rpm"), "{body}");
    let nan = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            json!({"command": "set_speed", "params": [{"name": "rpm", "value": {"floatValue": "NaN"}}]}),
        )
        .await;
    problem(&nan, 400, "INVALID_ARGUMENT");
    let unknown_field = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            json!({"command": "stop", "force": true}),
        )
        .await;
    problem(&unknown_field, 400, "INVALID_ARGUMENT");
    let not_json = within(
        "a body that is not JSON",
        served.as_(OPERATOR).send(
            "POST",
            &commands,
            &[("content-type", "application/json")],
            Some(b"{stop"),
        ),
    )
    .await
    .unwrap();
    problem(&not_json, 400, "INVALID_ARGUMENT");
    let form = within(
        "a form body",
        served.as_(OPERATOR).send(
            "POST",
            &commands,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"command=stop"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(form.status, 415, "{}", form.text());
    let huge = json!({"command": "stop", "idempotencyKey": "k".repeat(8192)});
    let oversized = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            huge,
        )
        .await;
    assert_eq!(oversized.status, 413, "{}", oversized.text());
    assert_eq!(oversized.json()["code"], "RESOURCE_EXHAUSTED");

    // A command past its deadline is never actuated: 504.
    let late = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/commands",
            &commands,
            json!({"command": "start", "deadline": rfc3339(-60)}),
        )
        .await;
    problem(&late, 504, "DEADLINE_EXCEEDED");

    // A latched trip cannot be shelved: FAILED_PRECONDITION is 400.
    let source = twins.source("http-errors").unwrap();
    ingest_durable(&twins, &press(2), "temperature", reading(120.0, source, 1)).await;
    ingest_durable(
        &twins,
        &press(2),
        "temperature_b",
        reading(120.0, source, 2),
    )
    .await;
    wait_until("the trip", STEP, || async {
        twins
            .report(&press(2))
            .await
            .is_ok_and(|r| r.alarms.iter().any(|a| a.code == "trip:overtemp"))
    })
    .await;
    let shelve = served
        .post(
            OPERATOR,
            "/api/v1/twins/{assetPath}/alarms/{code}/shelve",
            &format!("{}/alarms/{}/shelve", twin_url(2), segment("trip:overtemp")),
            json!({"reason": "nuisance", "duration": "60s"}),
        )
        .await;
    problem(&shelve, 400, "FAILED_PRECONDITION");

    // Watches beyond the limit: 429.
    let first = within("a watch", served.as_(VIEWER).events("/api/v1/watch"))
        .await
        .unwrap();
    let second = within(
        "a second watch",
        served.as_(VIEWER).send("GET", "/api/v1/watch", &[], None),
    )
    .await
    .unwrap();
    problem(&second, 429, "RESOURCE_EXHAUSTED");
    drop(first);

    let answers: Vec<Json> = served
        .seen
        .iter()
        .map(|(path, method, status, body)| {
            json!({"path": path, "method": method, "status": status, "body": body})
        })
        .collect();
    let document = within("the document", served.base.get("/api/v1/openapi.json"))
        .await
        .json();
    validate_against_document(&document, &answers, &[]);
    served.stop().await;
}

/// Reads events until one named `name`, failing on an `error` event or the end.
async fn next_named(events: &mut Events, name: &str) -> Json {
    loop {
        let event = within(name, events.next())
            .await
            .unwrap_or_else(|| panic!("the stream ended before a {name} event"));
        assert_ne!(event.name, "error", "{}", event.data);
        if event.name == name {
            return event.json();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_a_snapshot_then_ordered_changes_as_server_sent_events() {
    let served = serve(ApiLimits::default()).await;
    let twins = served.runtime.twins().clone();
    let mut events = within(
        "the watch opens",
        served
            .as_(VIEWER)
            .events("/api/v1/watch?pathPrefix=acme/plant-a/line-1"),
    )
    .await
    .unwrap();
    let mut received = Vec::new();
    let mut snapshot = Vec::new();
    loop {
        let event = within("a snapshot", events.next())
            .await
            .expect("the snapshot");
        received.push(("".to_string(), event.clone()));
        match event.name.as_str() {
            "snapshot" => snapshot.push(event.json()["assetPath"].as_str().unwrap().to_string()),
            "snapshotComplete" => {
                assert_eq!(event.json(), json!({"twins": 2}));
                break;
            }
            other => panic!("unexpected {other} before the snapshot completed"),
        }
    }
    assert_eq!(snapshot, [press(1).to_string(), press(2).to_string()]);

    let source = twins.source("http-watch").unwrap();
    for seq in 1..=20 {
        ingest_durable(
            &twins,
            &press(1),
            "vibration",
            reading(1.0 + seq as f64 / 10.0, source, seq),
        )
        .await;
    }
    let mut version = 0u64;
    let mut values = Vec::new();
    while values.len() < 20 {
        let event = within("a change", events.next()).await.expect("changes");
        received.push(("".to_string(), event.clone()));
        assert_eq!(event.name, "change", "{}", event.data);
        let change = event.json();
        assert_eq!(change["assetPath"], press(1).as_str());
        let next: u64 = change["version"].as_str().unwrap().parse().unwrap();
        assert!(next > version, "versions rise: {next} after {version}");
        version = next;
        if change["reported"]["channel"] == "vibration" {
            values.push(change["reported"]["value"].as_f64().unwrap());
        }
    }
    let expected: Vec<f64> = (1..=20).map(|seq| 1.0 + f64::from(seq) / 10.0).collect();
    assert_eq!(values, expected, "every reading, in order");

    // A command's desired change arrives too.
    let sent = within(
        "a command",
        served.as_(OPERATOR).post(
            &format!("{}/commands", twin_url(1)),
            &json!({"command": "stop"}),
        ),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let desired = next_named(&mut events, "change").await;
    assert!(
        desired.get("desired").is_some() || desired.get("delivery").is_some(),
        "{desired}"
    );

    // The server stopping ends the stream with an error event.
    let document = within("the document", served.base.get("/api/v1/openapi.json"))
        .await
        .json();
    let samples: Vec<(String, Json)> = received
        .iter()
        .map(|(_, event)| {
            let schema = match event.name.as_str() {
                "snapshot" | "coalesced" => "doppel.v1.Twin",
                "snapshotComplete" => "doppel.v1.SnapshotComplete",
                _ => "doppel.v1.TwinChange",
            };
            (schema.to_string(), event.json())
        })
        .collect();
    validate_against_document(&document, &[], &samples);
    served.api.stop().await;
    let end = within("the stream ends", async {
        loop {
            match events.next().await {
                Some(event) if event.name == "error" => return Some(event.json()),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("an error event before the end");
    assert_eq!(end["code"], "UNAVAILABLE");
    served.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_api_are_served_over_tls_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let authority = doppel_testkit::tls::CertificateAuthority::new("doppel test CA");
    let (cert, key) = authority
        .issue("localhost", &["localhost", "127.0.0.1"])
        .write(dir.path(), "api");
    let api = ApiServer::start(
        config(ApiLimits::default()).tls(&cert, &key),
        runtime.twins().clone(),
    )
    .await
    .unwrap();
    let url = api.console_url().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let client = Client::new(&url, Some(authority.certificate_pem()));
    let caller = within(
        "a call over TLS",
        client.with_token(VIEWER).get("/api/v1/caller"),
    )
    .await;
    assert_eq!(caller.json()["role"], "viewer");

    let index = within("the console", client.get("/")).await;
    assert_eq!(index.status, 200);
    assert!(index.header("content-type").starts_with("text/html"));
    let policy = index.header("content-security-policy");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(index.header("x-content-type-options"), "nosniff");
    assert!(index.text().contains("/console/app.js"));
    assert!(!index.text().contains("<script>"), "no inline script");
    for file in [
        "app.js",
        "api.js",
        "dom.js",
        "overview.js",
        "unit.js",
        "twin.js",
        "alarms.js",
        "diagnostic.js",
        "cluster.js",
        "console.css",
    ] {
        let answer = within(file, client.get(&format!("/console/{file}"))).await;
        assert_eq!(answer.status, 200, "{file}");
        assert!(!answer.body.is_empty(), "{file} is empty");
        let media = answer.header("content-type");
        assert!(
            media.starts_with(if file.ends_with(".js") {
                "text/javascript"
            } else {
                "text/css"
            }),
            "{file}: {media}"
        );
        for unsafe_sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !answer.text().contains(unsafe_sink),
                "{file} uses {unsafe_sink}"
            );
        }
    }
    assert_eq!(
        within("a missing file", client.get("/console/secrets.js"))
            .await
            .status,
        404
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain = Client::new(&url.replace("https", "http"), None);
    assert!(plain.send("GET", "/", &[], None).await.is_err());
    within("the API stops", api.stop()).await;
    runtime.shutdown().await;
}

/// Validates the document as OpenAPI 3.1 and each answer (path template, method,
/// status, body) against the schema the document declares for it, and each
/// (schema name, instance) sample against that component schema, with Python's
/// `openapi-spec-validator` and `jsonschema`. Skips loudly when Python or those
/// modules are missing, unless `DOPPEL_REQUIRE_PEERS=1`.
pub(crate) fn validate_against_document(
    document: &Json,
    answers: &[Json],
    samples: &[(String, Json)],
) {
    const SCRIPT: &str = r##"
import json, sys
from openapi_spec_validator import validate
from jsonschema import Draft202012Validator
doc = json.load(open(sys.argv[1]))
validate(doc)
work = json.load(open(sys.argv[2]))
def check(schema, instance, what):
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"]}
    root.update(schema)
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=str)
    if errors:
        print(what, "does not match its schema:", errors[0].message, "at", list(errors[0].absolute_path))
        sys.exit(1)
for answer in work["answers"]:
    op = doc["paths"][answer["path"]][answer["method"]]
    status = str(answer["status"])
    response = op["responses"].get(status) or op["responses"]["default"]
    content = response["content"]
    schema = (content.get("application/json") or content.get("application/problem+json"))["schema"]
    check(schema, answer["body"], answer["method"] + " " + answer["path"] + " " + status)
for name, instance in work["samples"]:
    check({"$ref": "#/components/schemas/" + name}, instance, name)
print("ok", len(work["answers"]), len(work["samples"]))
"##;
    let dir = tempfile::tempdir().unwrap();
    let doc_path = dir.path().join("openapi.json");
    let work_path = dir.path().join("work.json");
    std::fs::write(&doc_path, document.to_string()).unwrap();
    std::fs::write(
        &work_path,
        json!({"answers": answers, "samples": samples}).to_string(),
    )
    .unwrap();
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator, jsonschema"])
        .output();
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        let message = "python3 with openapi-spec-validator and jsonschema is not installed: the OpenAPI document was NOT validated";
        assert!(!doppel_testkit::mosquitto::peers_required(), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    }
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&doc_path)
        .arg(&work_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "validation failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
