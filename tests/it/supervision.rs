//! OTP supervision: a panicking model restarts only its machine, from durable state;
//! too many restarts escalate to the line's supervisor.

use std::time::Duration;

use doppel::{SupervisorEvent, TwinChange};
use doppel_runtime::Error as KernelError;

use crate::support::{fragile, press, reading, settings, start_custom, types};

fn fragile_types() -> String {
    format!("{}\n[[types.press.models]]\nkind = \"fragile\"\n", types())
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<SupervisorEvent>,
) -> SupervisorEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a supervision event")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_model_restarts_its_machine_from_durable_state_and_siblings_never_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings();
    settings.supervision.max_restarts = 2;
    settings.supervision.within_secs = 60;
    let runtime = start_custom(dir.path(), &fragile_types(), settings, |b| {
        b.model("fragile", fragile)
    })
    .await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let mut events = runtime.supervision_events();
    let mut changes = twins.subscribe();
    let mut seq = 0;
    let mut send = |n: u32, value: f64| {
        seq += 1;
        let twins = twins.clone();
        async move {
            twins
                .ingest(&press(n), "temperature", reading(value, source, seq))
                .await
                .unwrap()
                .durable()
                .await
        }
    };
    for n in 1..=3 {
        send(n, 40.0 + f64::from(n)).await.unwrap();
    }
    let sibling_before = twins.report(&press(2)).await.unwrap();

    // The poisoned sample is never acknowledged.
    let poisoned = send(1, 13.0).await;
    assert!(
        matches!(poisoned, Err(KernelError::Unavailable(_))),
        "{poisoned:?}"
    );
    let SupervisorEvent::Restarted {
        supervisor,
        child,
        reason,
    } = next_event(&mut events).await
    else {
        panic!("expected a restart")
    };
    assert_eq!(supervisor.as_str(), "acme/plant-a/line-1");
    assert_eq!(child, press(1));
    assert!(reason.contains("cannot handle 13"), "{reason}");
    // The node's status keeps it, for the API and the console's diagnostics.
    let kept = twins.supervision();
    let last = kept.last().expect("the restart is kept");
    assert_eq!(last.child.as_ref(), Some(&press(1)));
    assert_eq!(last.supervisor.as_str(), "acme/plant-a/line-1");

    crate::support::wait_until("press-1 is back", Duration::from_secs(5), || {
        let twins = twins.clone();
        async move { twins.report(&press(1)).await.is_ok() }
    })
    .await;
    let recovered = twins.report(&press(1)).await.unwrap();
    assert_eq!(
        recovered.value("temperature"),
        Some(41.0),
        "durable state survives the crash"
    );
    assert_eq!(recovered.version, 1);
    assert_eq!(
        twins.report(&press(2)).await.unwrap(),
        sibling_before,
        "the sibling kept its state"
    );
    send(2, 55.0).await.unwrap();
    send(1, 45.0).await.unwrap();
    assert_eq!(
        twins.report(&press(2)).await.unwrap().value("temperature"),
        Some(55.0)
    );
    assert_eq!(
        twins.report(&press(1)).await.unwrap().value("temperature"),
        Some(45.0)
    );
    let mut restarted = Vec::new();
    while let Ok(event) = changes.try_recv() {
        if event.change == TwinChange::Restarted {
            restarted.push(event.asset);
        }
    }
    assert_eq!(restarted, [press(1)], "only the crashed machine restarted");

    // Two more crashes within the window exceed the line's intensity (2 in 60 s): the
    // line escalates, the plant restarts the whole line from durable state, and the
    // other line never notices.
    let line2_before = twins.report(&press(3)).await.unwrap();
    let _ = send(1, 13.0).await;
    assert!(matches!(
        next_event(&mut events).await,
        SupervisorEvent::Restarted { .. }
    ));
    crate::support::wait_until("press-1 is back again", Duration::from_secs(5), || {
        let twins = twins.clone();
        async move { twins.report(&press(1)).await.is_ok() }
    })
    .await;
    let _ = send(1, 13.0).await;
    let SupervisorEvent::Escalated { supervisor, reason } = next_event(&mut events).await else {
        panic!("expected the line to escalate")
    };
    assert_eq!(supervisor.as_str(), "acme/plant-a/line-1");
    assert!(reason.contains("more than 2 machine restarts"), "{reason}");
    let SupervisorEvent::Restarted {
        supervisor, child, ..
    } = next_event(&mut events).await
    else {
        panic!("expected the plant to restart the line")
    };
    assert_eq!(supervisor.as_str(), "acme/plant-a");
    assert_eq!(child.as_str(), "acme/plant-a/line-1");
    crate::support::wait_until("line-1 is back", Duration::from_secs(5), || {
        let twins = twins.clone();
        async move { twins.report(&press(1)).await.is_ok() && twins.report(&press(2)).await.is_ok() }
    })
    .await;
    assert_eq!(
        twins.report(&press(1)).await.unwrap().value("temperature"),
        Some(45.0)
    );
    assert_eq!(
        twins.report(&press(2)).await.unwrap().value("temperature"),
        Some(55.0)
    );
    assert_eq!(twins.report(&press(3)).await.unwrap(), line2_before);
    send(3, 60.0).await.unwrap();
    assert_eq!(twins.counters().restarts, 2);
    runtime.shutdown().await;
}
