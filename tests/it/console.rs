//! The operator console in real headless Chromium (WebDriver), served by a real node
//! over loopback: log in, navigate overview → line → twin, see a trip on the twin's
//! page and in the alarm list, acknowledge it, shelve another alarm for 2 s and see it
//! return, preview a clamped command and send it, ask for the next best action and
//! take one, a shadow model's outputs beside production's, an alarm message with
//! markup shown as text, a viewer who sees no controls, and an admin who deploys a
//! package as a canary from the models page and promotes it.

use std::time::{Duration, Instant};

use doppel::{Runtime, Severity};
use doppel_api::{ApiConfig, ApiHandle, ApiServer, Role};
use doppel_testkit::webdriver::Browser;

use crate::support::{self, ingest_durable, press, reading};

const VIEWER: &str = "console-viewer-token-0123456789";
const OPERATOR: &str = "console-operator-token-0123456789";
const ADMIN: &str = "console-admin-token-0123456789";

/// The press's declared objective, for the command panel's recommendation.
const RECOMMEND: &str = r#"
[types.press.recommend]
command = "set_speed"
param = "rpm"
values = [600, 1200, 1800, 2400]
maximize = "rpm"
constraints = [{ series = "temperature", max = 94.0 }]
"#;

/// A second version of the press's degradation model, shown as a shadow; made a day
/// ago.
fn shadow_package() -> String {
    format!(
        r#"
[package]
kind = "degradation"
version = "1.1.0"
params = {{ channel = "vibration", threshold = 11.0, warn_hours = 24.0, load_desired = "speed" }}

[package.metadata]
author = "ann"
created = "{}"
"#,
        support::rfc3339_ago(Duration::from_secs(86_400))
    )
}

/// Longest any step may take on a busy machine.
const STEP: Duration = Duration::from_secs(20);

/// The message of the markup model's alarm: it must render as text.
const MARKUP: &str = "<script>window.pwned = true</script><b>bold</b>";

/// A model that raises an alarm whose message is markup, on a vibration of exactly 7.
struct Markup;

impl doppel::Model for Markup {
    fn name(&self) -> &str {
        "markup"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn observe(
        &mut self,
        sample: &doppel::Sample,
        _twin: &doppel::TwinView<'_>,
        out: &mut doppel::ModelOutput,
    ) {
        if sample.value == 7.0 {
            out.raise("markup", Severity::Warning, MARKUP);
        }
    }
    fn project(
        &self,
        _twin: &doppel::TwinView<'_>,
        _scenario: &doppel::Scenario,
        _trajectory: &mut doppel::Trajectory,
    ) {
    }
}

async fn serve(dir: &std::path::Path) -> (Runtime, ApiHandle) {
    let types = format!(
        "{}\n[[types.press.models]]\nkind = \"markup\"\nchannel = \"vibration\"\n{RECOMMEND}",
        support::types()
    );
    let mut settings = support::settings();
    settings.models.allow_unsigned = true;
    let runtime = support::start_custom(dir, &types, settings, |b| {
        b.model("markup", |_spec, _type| Ok(Box::new(Markup)))
    })
    .await;
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
        .token("vera", VIEWER, Role::Viewer)
        .token("olga", OPERATOR, Role::Operator)
        .token("root", ADMIN, Role::Admin)
        .http("127.0.0.1:0".parse().unwrap());
    let api = ApiServer::start(config, runtime.twins().clone())
        .await
        .unwrap();
    (runtime, api)
}

fn path_selector(attribute: &str, path: &str) -> String {
    format!("[{attribute}=\"{path}\"]")
}

async fn log_in(browser: &Browser, url: &str, token: &str, who: &str) {
    browser.goto(url).await;
    let field = browser.wait_for("[data-test=login-token]", STEP).await;
    field.type_text(token).await;
    click(browser, "[data-test=login-submit]").await;
    browser
        .wait_text("[data-test=caller]", STEP, |text| text.contains(who))
        .await;
}

async fn log_out(browser: &Browser) {
    click(browser, "[data-test=logout]").await;
    browser.wait_for("[data-test=login-token]", STEP).await;
}

/// The alarm row of `path`'s alarm `code` in the alarm list.
fn alarm_row(path: &str, code: &str) -> String {
    format!("[data-test=alarm-row][data-path=\"{path}\"][data-code=\"{code}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_a_trip_from_overview_to_alarm_and_a_viewer_sees_no_controls() {
    let Some(browser) = Browser::start("console").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (runtime, api) = serve(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("console-test").unwrap();
    for (n, seq) in [(1, 1), (2, 2), (3, 3)] {
        ingest_durable(&twins, &press(n), "temperature", reading(40.0, source, seq)).await;
    }
    let url = api.console_url().unwrap();

    // A wrong token is refused; the right one signs in.
    browser.goto(&url).await;
    browser
        .wait_for("[data-test=login-token]", STEP)
        .await
        .type_text("not-a-token-of-this-node")
        .await;
    click(&browser, "[data-test=login-submit]").await;
    browser.wait_for("[data-test=login-error]", STEP).await;
    log_in(&browser, &url, OPERATOR, "olga (operator)").await;

    // Overview → line → twin.
    let line = "acme/plant-a/line-1";
    let group = browser
        .wait_for(
            &format!("[data-test=group]{}", path_selector("data-path", line)),
            STEP,
        )
        .await;
    group.find_all("[data-test=group-link]").await[0]
        .click()
        .await;
    let row = browser
        .wait_for(
            &format!(
                "[data-test=twin-row]{}",
                path_selector("data-path", press(2).as_str())
            ),
            STEP,
        )
        .await;
    assert!(
        !browser
            .exists(&format!(
                "[data-test=twin-row]{}",
                path_selector("data-path", press(3).as_str())
            ))
            .await,
        "the line page shows only its own machines"
    );
    row.find_all("[data-test=twin-link]").await[0].click().await;
    browser
        .wait_text("[data-test=asset-path]", STEP, |text| {
            text == press(2).as_str()
        })
        .await;
    browser
        .wait_text("[data-test=run-state]", STEP, |text| {
            text.contains("RUNNING")
        })
        .await;

    // A trip shows on the twin's page (live, over the watch).
    ingest_durable(&twins, &press(2), "temperature", reading(120.0, source, 4)).await;
    ingest_durable(
        &twins,
        &press(2),
        "temperature_b",
        reading(120.0, source, 5),
    )
    .await;
    let tripped = Instant::now();
    browser
        .wait_text("[data-test=run-state]", STEP, |text| {
            text.contains("TRIPPED")
        })
        .await;
    browser
        .wait_for("[data-test=twin-alarm][data-code=\"trip:overtemp\"]", STEP)
        .await;
    let on_twin_page = tripped.elapsed();
    // The README's picture of the detail page of a tripped press.
    if let Some(file) = std::env::var_os("DOPPEL_CONSOLE_SCREENSHOT") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(file, browser.screenshot().await).unwrap();
    }

    // … and in the alarm list, where it is acknowledged.
    click(&browser, "[data-test=nav-alarms]").await;
    let trip_row = alarm_row(press(2).as_str(), "trip:overtemp");
    let shown = Instant::now();
    browser.wait_for(&trip_row, STEP).await;
    let in_alarm_list = shown.elapsed();
    eprintln!(
        "the trip showed on the twin's page {on_twin_page:?} after it was durable, in the alarm list {in_alarm_list:?} after opening it"
    );
    click(&browser, &format!("{trip_row} [data-test=ack]")).await;
    wait_state(&browser, &trip_row, |state| state == "acknowledged").await;

    // A trip raised while the list is open appears in it.
    ingest_durable(&twins, &press(3), "temperature", reading(120.0, source, 6)).await;
    ingest_durable(
        &twins,
        &press(3),
        "temperature_b",
        reading(120.0, source, 7),
    )
    .await;
    let raised = Instant::now();
    browser
        .wait_for(&alarm_row(press(3).as_str(), "trip:overtemp"), STEP)
        .await;
    eprintln!(
        "a new trip appeared in the open alarm list {:?} after it was durable",
        raised.elapsed()
    );

    // Another alarm shelved for 2 s returns by itself, unacknowledged.
    twins.sources_lost(&[source], "broker lost");
    let stale_row = alarm_row(press(1).as_str(), "stale:temperature");
    browser.wait_for(&stale_row, STEP).await;
    click(&browser, &format!("{stale_row} [data-test=shelve]")).await;
    browser
        .wait_for(&format!("{stale_row} [data-test=shelve-reason]"), STEP)
        .await
        .type_text("broker maintenance")
        .await;
    browser
        .wait_for(&format!("{stale_row} [data-test=shelve-seconds]"), STEP)
        .await
        .type_text("2")
        .await;
    click(&browser, &format!("{stale_row} [data-test=shelve-submit]")).await;
    wait_state(&browser, &stale_row, |state| state == "shelved").await;
    let shelved = Instant::now();
    wait_state(&browser, &stale_row, |state| state == "unacknowledged").await;
    assert!(
        shelved.elapsed() >= Duration::from_millis(1500),
        "the shelving lasted its 2 s"
    );

    // Markup in an alarm message is text.
    ingest_durable(&twins, &press(1), "vibration", reading(7.0, source, 8)).await;
    let markup_row = alarm_row(press(1).as_str(), "markup");
    let row = browser.wait_for(&markup_row, STEP).await;
    assert!(row.text().await.contains(MARKUP), "{}", row.text().await);
    assert!(
        row.find_all("script, b").await.is_empty(),
        "markup became elements"
    );
    let pwned = browser
        .execute("return window.pwned === true", serde_json::json!([]))
        .await;
    assert_eq!(pwned, serde_json::json!(false), "the alarm's script ran");

    // A command previewed, clamped; sent, clamped the same.
    browser
        .goto(&format!(
            "{url}#/twin/{}",
            doppel_testkit::http::segment(press(1).as_str())
        ))
        .await;
    browser.wait_for("[data-test=command-panel]", STEP).await;
    let select = browser.wait_for("[data-test=command-name]", STEP).await;
    browser
        .execute(
            "const s = arguments[0]; s.value = 'set_speed'; s.dispatchEvent(new Event('change', {bubbles: true}));",
            serde_json::json!([select.reference()]),
        )
        .await;
    browser
        .wait_for("[data-test=param][data-name=rpm]", STEP)
        .await
        .type_text("2800")
        .await;
    click(&browser, "[data-test=preview]").await;
    let preview = browser
        .wait_text("[data-test=preview-verdict]", STEP, |text| {
            text.contains("clamped")
        })
        .await;
    assert!(preview.contains("2400"), "{preview}");
    click(&browser, "[data-test=confirm]").await;
    let verdict = browser
        .wait_text("[data-test=command-verdict]", STEP, |text| !text.is_empty())
        .await;
    assert_eq!(
        verdict, preview,
        "the real verdict reads as the preview did"
    );
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(report.desired("speed").map(|v| v.as_f64()), Some(2400.0));

    // The next best action beside it: ranked candidates; `Use` fills the form.
    click(&browser, "[data-test=recommend]").await;
    let shown = browser
        .wait_text("[data-test=recommendation]", STEP, |text| {
            text.contains("Objective: maximize rpm")
        })
        .await;
    // 2400 rpm heads past the trip from 40 degC; 1800 settles at 79.
    let candidates = browser.find_all("[data-test=candidate]").await;
    assert_eq!(candidates.len(), 4, "{shown}");
    let first = candidates[0].attribute("data-value").await.unwrap();
    assert_eq!(first, "1800", "{shown}");
    assert!(shown.contains("denied by overtemp (projected)"), "{shown}");
    click(&browser, "[data-test=candidate] [data-test=use-candidate]").await;
    let filled = browser
        .execute(
            "return document.querySelector('[data-test=param][data-name=rpm]').value",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(filled, serde_json::json!(first), "{shown}");

    // The operator annotates the recommendation it used, then the markup alarm as a
    // false alarm: each an audit record with the models concerned.
    click(&browser, "[data-test=candidate] [data-test=annotate-this]").await;
    browser
        .wait_for("[data-test=annotate-note]", STEP)
        .await
        .type_text("ran at this speed for a shift")
        .await;
    click(&browser, "[data-test=annotate]").await;
    browser
        .wait_text("[data-test=annotate-result]", STEP, |text| {
            text.contains("Annotated as audit record #")
                && text.contains(&format!("Recommendation set_speed rpm={first}"))
        })
        .await;
    click(
        &browser,
        "[data-test=twin-alarm][data-code=\"markup\"] [data-test=annotate-this]",
    )
    .await;
    set_value(
        &browser,
        "[data-test=annotate-outcome]",
        "ANNOTATION_OUTCOME_FALSE_ALARM",
    )
    .await;
    click(&browser, "[data-test=annotate]").await;
    browser
        .wait_text("[data-test=annotate-result]", STEP, |text| {
            text.contains("false alarm (Alarm markup")
        })
        .await;
    let labels = twins
        .audit_page(
            &press(1),
            (doppel::Timestamp(0), doppel::Timestamp::now()),
            &[doppel::kernel::AuditKind::Annotation],
            None,
            10,
        )
        .unwrap();
    let made: Vec<(&str, &str)> = labels
        .iter()
        .map(|r| (r.command.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        made,
        [
            (
                "recommendation:set_speed",
                "confirmed: ran at this speed for a shift"
            ),
            ("alarm:markup", "false_alarm")
        ]
    );
    assert_eq!(labels[1].models[0].name, "markup");
    assert_eq!(labels[0].origin.principal, "olga");

    // A shadow model's outputs beside production's on the twin's page.
    twins.register_package(&shadow_package(), "test").unwrap();
    let request = doppel::kernel::twin::DeployRequest {
        kind: "degradation".into(),
        version: "1.1.0".into(),
        model: None,
        target: doppel::kernel::model::registry::Target::Prefix(press(1)),
        mode: doppel::kernel::model::registry::DeployMode::Shadow,
        canary: None,
        evaluation_secs: None,
    };
    let deployed = twins
        .deploy(request, &doppel::kernel::Origin::operator("olga"))
        .await
        .unwrap();
    assert_eq!(deployed.applied.len(), 1, "{deployed:?}");
    for seq in 100..103 {
        ingest_durable(&twins, &press(1), "vibration", reading(2.0, source, seq)).await;
    }
    browser.goto(&format!("{url}#/")).await;
    browser.wait_for("[data-test=caller]", STEP).await;
    browser
        .goto(&format!(
            "{url}#/twin/{}",
            doppel_testkit::http::segment(press(1).as_str())
        ))
        .await;
    browser
        .wait_text(
            "[data-test=shadow-value][data-name=rul_hours]",
            STEP,
            |text| text.contains("degradation 1.1.0") && text.contains("(shadow)"),
        )
        .await;

    // The models page: the shadow listed; an operator may look but not deploy.
    browser.goto(&format!("{url}#/models")).await;
    browser
        .wait_text("[data-test=deployment][data-id=\"1\"]", STEP, |text| {
            text.contains("degradation@1.1.0") && text.contains("shadow")
        })
        .await;
    assert!(!browser.exists("[data-test=deploy-form]").await);

    // The diagnostic page's audit trail shows the command and its clamp.
    browser.goto(&format!("{url}#/diagnostic")).await;
    browser
        .wait_text(
            "[data-test=audit-row][data-kind=AUDIT_KIND_COMMAND]",
            STEP,
            |text| text.contains("set_speed") && text.contains("2400"),
        )
        .await;

    // No CSP violation or script error on any page.
    let messages = browser.console_messages().await;
    assert!(
        !messages
            .iter()
            .any(|m| m.starts_with("SEVERE") && !m.contains("401") && !m.contains("404")),
        "{messages:#?}"
    );

    // A viewer sees no command panel and no alarm buttons.
    log_out(&browser).await;
    log_in(&browser, &url, VIEWER, "vera (viewer)").await;
    browser
        .goto(&format!(
            "{url}#/twin/{}",
            doppel_testkit::http::segment(press(1).as_str())
        ))
        .await;
    browser
        .wait_text("[data-test=asset-path]", STEP, |text| {
            text == press(1).as_str()
        })
        .await;
    assert!(!browser.exists("[data-test=command-panel]").await);
    browser.goto(&format!("{url}#/alarms")).await;
    browser.wait_for(&markup_row, STEP).await;
    for control in ["ack", "shelve", "unshelve"] {
        assert!(
            !browser.exists(&format!("[data-test={control}]")).await,
            "a viewer sees {control}"
        );
    }

    // An admin deploys the package as a canary from the models page and promotes it.
    log_out(&browser).await;
    log_in(&browser, &url, ADMIN, "root (admin)").await;
    browser.goto(&format!("{url}#/models")).await;
    browser.wait_for("[data-test=deploy-form]", STEP).await;
    browser
        .wait_for("[data-test=deploy-type]", STEP)
        .await
        .type_text("press")
        .await;
    set_value(&browser, "[data-test=deploy-mode]", "DEPLOY_MODE_CANARY").await;
    click(&browser, "[data-test=deploy]").await;
    browser
        .wait_text("[data-test=deployment][data-id=\"2\"]", STEP, |text| {
            text.contains("canary running on 2 twin(s)")
        })
        .await;
    browser
        .wait_for("[data-test=model-reason]", STEP)
        .await
        .type_text("held for a shift")
        .await;
    click(
        &browser,
        "[data-test=deployment][data-id=\"2\"] [data-test=promote]",
    )
    .await;
    browser
        .wait_text("[data-test=deployment][data-id=\"2\"]", STEP, |text| {
            text.contains("canary promoted")
        })
        .await;
    browser
        .wait_text("[data-test=deployment][data-id=\"3\"]", STEP, |text| {
            text.contains("production") && text.contains("in force")
        })
        .await;
    let report = twins.report(&press(3)).await.unwrap();
    let degradation = report
        .models
        .iter()
        .find(|m| m.name == "degradation")
        .unwrap();
    assert_eq!(degradation.version, "1.1.0");

    // The admin registers a package file pasted into the models page.
    let text = shadow_package().replace("version = \"1.1.0\"", "version = \"1.3.0\"");
    set_value(&browser, "[data-test=register-text]", &text).await;
    click(&browser, "[data-test=register]").await;
    browser
        .wait_text("[data-test=register-result]", STEP, |text| {
            text == "Registered degradation@1.3.0"
        })
        .await;
    browser
        .wait_text("[data-test=package]:last-child", STEP, |text| {
            text.contains("degradation@1.3.0") && text.contains("root")
        })
        .await;
    let registry = twins.packages().unwrap();
    let registered = registry.iter().find(|p| p.version == "1.3.0").unwrap();
    assert_eq!(registered.registered_by, "root");
    // A file that is not a package is refused with the registry's reason, not stored.
    set_value(&browser, "[data-test=register-text]", "[package]\nkind = 3").await;
    click(&browser, "[data-test=register]").await;
    browser
        .wait_text("[data-test=models-error]", STEP, |text| !text.is_empty())
        .await;
    assert_eq!(twins.packages().unwrap().len(), registry.len());

    browser.quit().await;
    api.stop().await;
    runtime.shutdown().await;
}

/// Clicks the element `selector` names once it is there.
async fn click(browser: &Browser, selector: &str) {
    browser.wait_for(selector, STEP).await.click().await;
}

/// Sets the value of the field or select `selector` names, once it is there.
async fn set_value(browser: &Browser, selector: &str, value: &str) {
    let field = browser.wait_for(selector, STEP).await;
    browser
        .execute(
            "arguments[0].value = arguments[1];",
            serde_json::json!([field.reference(), value]),
        )
        .await;
}

async fn wait_state(browser: &Browser, row: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(element) = browser.find_all(row).await.into_iter().next()
            && let Some(state) = element.attribute("data-state").await
            && check(&state)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{row} never reached the state");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
