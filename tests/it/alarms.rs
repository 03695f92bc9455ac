//! The alarm lifecycle (ISA-18.2) on a real runtime: acknowledge, return to normal
//! unacknowledged, shelve with an automatic end, latched trips never shelved; every
//! response journaled, audited and kept across a restart.

use std::time::Duration;

use doppel::{
    AlarmNote, AlarmRefusal, AlarmResponse, AuditKind, Error, Origin, Shelving, Timestamp,
};

use doppel_runtime::internal::TwinsInternals;

use crate::support::{ingest_durable, press, reading, start, wait_until};

const STALE: &str = "stale:vibration";

fn note(by: &str, text: &str) -> AlarmNote {
    AlarmNote {
        by: by.to_string(),
        at: Timestamp::now(),
        note: text.to_string(),
    }
}

/// The alarm `code` of press `n` as the twin reports it.
async fn alarm(twins: &doppel::Twins, n: u32, code: &str) -> Option<doppel::Alarm> {
    let report = twins.report(&press(n)).await.unwrap();
    report.alarms.into_iter().find(|a| a.code == code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_acknowledged_returns_unacknowledged_and_comes_back_from_its_shelf() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("alarm-test").unwrap();
    ingest_durable(&twins, &press(1), "vibration", reading(2.0, source, 1)).await;
    twins.sources_lost(&[source], "broker lost");
    wait_until("the stale alarm", Duration::from_secs(10), || async {
        alarm(&twins, 1, STALE).await.is_some()
    })
    .await;
    let raised = alarm(&twins, 1, STALE).await.unwrap();
    assert!(raised.active && raised.acknowledged.is_none());
    assert_eq!(raised.state_name(), "unacknowledged");

    // Acknowledged with a note, audited with who did it.
    let outcome = twins
        .respond_to_alarm(
            &press(1),
            STALE,
            AlarmResponse::Acknowledge(note("ann", "checking the broker")),
            Origin::operator("ann"),
        )
        .await
        .unwrap();
    let acknowledged = outcome.alarm.expect("still active");
    assert_eq!(acknowledged.state_name(), "acknowledged");
    assert_eq!(acknowledged.acknowledged.as_ref().unwrap().by, "ann");
    let audit = twins
        .audit(&press(1), Timestamp(0), Timestamp(i64::MAX), 100)
        .unwrap();
    let record = audit
        .iter()
        .find(|r| r.kind == AuditKind::AlarmResponse)
        .expect("the response is audited");
    assert_eq!(Some(record.seq), outcome.audit_seq);
    assert_eq!(record.command, "acknowledge");
    assert_eq!(record.origin.principal, "ann");
    assert!(record.reason.contains(STALE) && record.reason.contains("checking the broker"));
    let again = twins
        .respond_to_alarm(
            &press(1),
            STALE,
            AlarmResponse::Acknowledge(note("ann", "")),
            Origin::operator("ann"),
        )
        .await;
    assert!(matches!(
        again,
        Err(Error::AlarmRefused {
            refusal: AlarmRefusal::NoChange { .. },
            ..
        })
    ));

    // Acknowledged and back to normal: gone.
    ingest_durable(&twins, &press(1), "vibration", reading(2.1, source, 2)).await;
    assert!(alarm(&twins, 1, STALE).await.is_none());

    // A new occurrence that returns to normal before anyone acknowledged it stays.
    twins.sources_lost(&[source], "broker lost again");
    wait_until("the stale alarm again", Duration::from_secs(10), || async {
        alarm(&twins, 1, STALE).await.is_some()
    })
    .await;
    ingest_durable(&twins, &press(1), "vibration", reading(2.2, source, 3)).await;
    let returned = alarm(&twins, 1, STALE)
        .await
        .expect("kept until acknowledged");
    assert!(!returned.active);
    assert_eq!(returned.state_name(), "returned unacknowledged");
    let outcome = twins
        .respond_to_alarm(
            &press(1),
            STALE,
            AlarmResponse::Acknowledge(note("ann", "")),
            Origin::operator("ann"),
        )
        .await
        .unwrap();
    assert!(outcome.alarm.is_none(), "acknowledged and normal: gone");

    // Shelved, it does not stand; when its shelving ends it is back, unacknowledged.
    twins.sources_lost(&[source], "broker lost a third time");
    wait_until(
        "the stale alarm a third time",
        Duration::from_secs(10),
        || async { alarm(&twins, 1, STALE).await.is_some() },
    )
    .await;
    let until = Timestamp(Timestamp::now().0 + 400_000);
    let shelved = twins
        .respond_to_alarm(
            &press(1),
            STALE,
            AlarmResponse::Shelve(Shelving {
                note: note("ann", "known broker maintenance"),
                until,
            }),
            Origin::operator("ann"),
        )
        .await
        .unwrap()
        .alarm
        .unwrap();
    assert_eq!(shelved.state_name(), "shelved");
    assert!(!shelved.is_standing());
    wait_until("the shelving ends", Duration::from_secs(10), || async {
        alarm(&twins, 1, STALE)
            .await
            .is_some_and(|a| a.shelved.is_none())
    })
    .await;
    let back = alarm(&twins, 1, STALE).await.unwrap();
    assert!(back.is_standing() && back.acknowledged.is_none());
    wait_until(
        "the node's unshelving is audited",
        Duration::from_secs(10),
        || async {
            twins
                .audit(&press(1), Timestamp(0), Timestamp(i64::MAX), 100)
                .unwrap()
                .iter()
                .any(|r| r.command == "unshelve" && r.origin.principal == "node")
        },
    )
    .await;
    drop(twins);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latched_trip_is_never_shelved_and_responses_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("alarm-test").unwrap();
    ingest_durable(&twins, &press(2), "temperature", reading(120.0, source, 1)).await;
    ingest_durable(
        &twins,
        &press(2),
        "temperature_b",
        reading(120.0, source, 2),
    )
    .await;
    let trip = alarm(&twins, 2, "trip:overtemp").await.expect("tripped");
    for response in [
        AlarmResponse::Shelve(Shelving {
            note: note("ann", "nuisance"),
            until: Timestamp(Timestamp::now().0 + 60_000_000),
        }),
        AlarmResponse::RemoveFromService(note("ann", "maintenance")),
    ] {
        let refused = twins
            .respond_to_alarm(&press(2), &trip.code, response, Origin::operator("ann"))
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::AlarmRefused {
                    refusal: AlarmRefusal::Latched(_),
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    let unknown = twins
        .respond_to_alarm(
            &press(2),
            "no-such-alarm",
            AlarmResponse::Acknowledge(note("ann", "")),
            Origin::operator("ann"),
        )
        .await;
    assert!(matches!(
        unknown,
        Err(Error::AlarmRefused {
            refusal: AlarmRefusal::Unknown(_),
            ..
        })
    ));
    twins
        .respond_to_alarm(
            &press(2),
            &trip.code,
            AlarmResponse::Acknowledge(note("olga", "operator on the way")),
            Origin::operator("olga"),
        )
        .await
        .unwrap();
    drop(twins);
    runtime.shutdown().await;

    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let after = alarm(&twins, 2, "trip:overtemp")
        .await
        .expect("still latched");
    assert_eq!(after.state_name(), "acknowledged");
    assert_eq!(after.acknowledged.unwrap().note, "operator on the way");
    let listed = twins.alarms(None).await;
    assert!(listed.unavailable.is_empty());
    assert!(
        listed
            .alarms
            .iter()
            .any(|(path, a)| *path == press(2) && a.code == "trip:overtemp")
    );
    drop(twins);
    runtime.shutdown().await;
}

/// A model that raises alarm `flag` on a reading of 13 and clears it on any other.
struct Flag;

impl doppel::Model for Flag {
    fn name(&self) -> &str {
        "flag"
    }
    fn version(&self) -> &str {
        "1"
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
        if sample.value == 13.0 {
            out.raise("flag", doppel::Severity::Warning, "thirteen");
        } else {
            out.clear("flag");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_alarm_is_suppressed_by_design_while_its_machine_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let types = format!(
        "{}\n[[types.press.models]]\nkind = \"flag\"\nsuppress_when = [\"stopped\", \"tripped\"]\n",
        doppel_testkit::twin_types::PRESS_BASE
    );
    let runtime =
        crate::support::start_custom(dir.path(), &types, crate::support::settings(), |builder| {
            builder.model("flag", |_, _| Ok(Box::new(Flag)))
        })
        .await;
    let twins = runtime.twins().clone();
    let source = twins.source("alarm-test").unwrap();
    ingest_durable(&twins, &press(3), "vibration", reading(13.0, source, 1)).await;
    let raised = alarm(&twins, 3, "flag").await.expect("raised");
    assert!(raised.is_standing());
    assert_eq!(
        twins.report(&press(3)).await.unwrap().alarms.len(),
        1,
        "only the flag"
    );

    let stop = doppel::Command::new(press(3), "stop", Origin::operator("ann"));
    twins.command(stop).await.unwrap();
    let suppressed = alarm(&twins, 3, "flag").await.unwrap();
    assert!(suppressed.suppressed && !suppressed.is_standing());
    assert_eq!(suppressed.state_name(), "suppressed");
    // Raised again while stopped, it stays suppressed.
    ingest_durable(&twins, &press(3), "vibration", reading(13.0, source, 2)).await;
    assert!(alarm(&twins, 3, "flag").await.unwrap().suppressed);

    let start = doppel::Command::new(press(3), "start", Origin::operator("ann"));
    twins.command(start).await.unwrap();
    let back = alarm(&twins, 3, "flag").await.unwrap();
    assert!(back.is_standing(), "running again, it stands");
    // A suppressed alarm that clears needs no acknowledgement.
    twins
        .command(doppel::Command::new(
            press(3),
            "stop",
            Origin::operator("ann"),
        ))
        .await
        .unwrap();
    ingest_durable(&twins, &press(3), "vibration", reading(2.0, source, 3)).await;
    assert!(alarm(&twins, 3, "flag").await.is_none());
    drop(twins);
    runtime.shutdown().await;
}

#[test]
fn suppression_by_design_is_for_models_only() {
    let types = format!(
        "{}\n[[types.press.governors]]\nkind = \"trip\"\nchannel = \"temperature\"\nabove = 95.0\nsuppress_when = [\"stopped\"]\n",
        doppel_testkit::twin_types::PRESS_BASE
    );
    let error = doppel::TwinTypes::from_toml(&types, "types.toml").unwrap_err();
    assert!(error.to_string().contains("suppress_when"), "{error}");
    let types = format!(
        "{}\n[[types.press.models]]\nkind = \"thermal\"\nchannel = \"temperature\"\nsuppress_when = [\"sleeping\"]\n",
        doppel_testkit::twin_types::PRESS_BASE
    );
    let error = doppel::TwinTypes::from_toml(&types, "types.toml").unwrap_err();
    assert!(error.to_string().contains("sleeping"), "{error}");
}

/// ISA-18.2's rate figures: every activation counts once, an alarm that activates
/// three times within a minute chatters, and neither counts twins outside the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_rates_count_activations_and_find_a_chattering_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("alarm-test").unwrap();
    let mut seq = 0;
    for round in 0..3 {
        seq += 1;
        ingest_durable(&twins, &press(1), "vibration", reading(2.0, source, seq)).await;
        twins.sources_lost(&[source], "flapping link");
        wait_until("the stale alarm", Duration::from_secs(10), || async {
            alarm(&twins, 1, STALE).await.is_some_and(|a| a.active)
        })
        .await;
        let rates = twins.alarm_rates(Some(&press(1)));
        assert_eq!(rates.activations, round + 1, "{rates:?}");
    }
    let rates = twins.alarm_rates(None);
    assert_eq!(
        rates.chattering,
        vec![(press(1), STALE.to_string(), 3)],
        "{rates:?}"
    );
    assert_eq!(twins.alarm_rates(Some(&press(3))).activations, 0);
    drop(twins);
    runtime.shutdown().await;
}

/// The alarms of press `n` as a cloud mirror replaying the outbox holds them.
fn mirrored_alarms(twins: &doppel::Twins, n: u32) -> Vec<doppel::Alarm> {
    let mut row = None;
    for update in crate::outbox::outbox_updates(twins, 0)
        .iter()
        .filter(|u| u.asset == press(n))
    {
        update.apply(&mut row);
    }
    row.map(|row| row.alarms).unwrap_or_default()
}

/// What a person reads of an alarm: its code, ISA-18.2 state and who responded.
fn lifecycle(
    alarms: &[doppel::Alarm],
) -> Vec<(String, &'static str, Option<String>, Option<String>)> {
    alarms
        .iter()
        .map(|a| {
            (
                a.code.clone(),
                a.state_name(),
                a.acknowledged
                    .as_ref()
                    .map(|n| format!("{}: {}", n.by, n.note)),
                a.shelved
                    .as_ref()
                    .map(|s| format!("{}: {}", s.note.by, s.note.note)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alarm_state_reaches_a_cloud_mirror_through_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::support::settings();
    settings.replicate = true;
    let runtime = crate::support::start_with(dir.path(), settings, |b| b).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let source = twins.source("mirror-alarms").unwrap();
    ingest_durable(&twins, &press(1), "vibration", reading(2.0, source, 1)).await;

    // After each step the mirror, replaying the outbox, reads as the twin does.
    async fn agree(twins: &doppel::Twins, step: &str, state: Option<&str>) {
        twins.flush().await.unwrap();
        let report = twins.report(&press(1)).await.unwrap();
        let twin = lifecycle(&report.alarms);
        assert_eq!(
            twin.iter().find(|a| a.0 == STALE).map(|a| a.1),
            state,
            "{step}: the twin"
        );
        assert_eq!(
            lifecycle(&mirrored_alarms(twins, 1)),
            twin,
            "{step}: the mirror"
        );
    }
    let respond = |response: AlarmResponse| {
        let twins = twins.clone();
        async move {
            twins
                .respond_to_alarm(&press(1), STALE, response, Origin::operator("ann"))
                .await
                .unwrap()
        }
    };

    twins.sources_lost(&[source], "broker lost");
    wait_until("the stale alarm", Duration::from_secs(10), || async {
        alarm(&twins, 1, STALE).await.is_some()
    })
    .await;
    agree(&twins, "raised", Some("unacknowledged")).await;
    respond(AlarmResponse::Acknowledge(note("ann", "on it"))).await;
    agree(&twins, "acknowledged", Some("acknowledged")).await;
    respond(AlarmResponse::RemoveFromService(note("ann", "sensor swap"))).await;
    agree(&twins, "out of service", Some("out of service")).await;
    respond(AlarmResponse::ReturnToService(note("ann", ""))).await;
    agree(&twins, "back in service", Some("acknowledged")).await;
    respond(AlarmResponse::Shelve(Shelving {
        note: note("ann", "maintenance"),
        until: Timestamp(Timestamp::now().0 + 300_000),
    }))
    .await;
    agree(&twins, "shelved", Some("shelved")).await;
    wait_until("the shelving ends", Duration::from_secs(10), || async {
        alarm(&twins, 1, STALE)
            .await
            .is_some_and(|a| a.shelved.is_none())
    })
    .await;
    agree(&twins, "unshelved by the node", Some("unacknowledged")).await;
    ingest_durable(&twins, &press(1), "vibration", reading(2.1, source, 2)).await;
    agree(&twins, "back to normal", Some("returned unacknowledged")).await;
    respond(AlarmResponse::Acknowledge(note("ann", "fixed"))).await;
    agree(&twins, "acknowledged and normal", None).await;

    // Every response is replicated with its audit record.
    let audited: Vec<String> = crate::outbox::outbox_updates(&twins, 0)
        .iter()
        .flat_map(|u| u.audit.iter())
        .filter(|r| r.kind == AuditKind::AlarmResponse)
        .map(|r| r.command.clone())
        .collect();
    assert_eq!(
        audited,
        [
            "acknowledge",
            "remove_from_service",
            "return_to_service",
            "shelve",
            "unshelve",
            "acknowledge"
        ]
    );
    drop(twins);
    runtime.shutdown().await;
}
