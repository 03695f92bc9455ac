//! [`PlannerHost`]: runs each configured fleet planner on the one live cloud node that
//! rendezvous hashing picks for it, and moves it when that node dies.
//!
//! Every cloud node configured with a planner watches membership; the node the hash
//! picks runs the planner over its fleet mirror and sends the planner's commands
//! through its router, so they reach the owning edge node, pass that twin's governors
//! and are audited with the planner as origin. A planner that moves starts with fresh
//! state on its new node.

use std::sync::Arc;
use std::time::Duration;

use doppel_api::convert::{named_value, timestamp_to_proto};
use doppel_api::{Caller, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_server::TwinService;
use doppel_runtime::Timestamp;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Request;
use tracing::Instrument;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::membership::Member;
use crate::mirror::MirrorStore;
use crate::placement;
use crate::planner::{self, FleetView, PlannedCommand, Planner};
use crate::router::ClusterApi;

/// How often placement is re-checked and due planners run.
const TICK: Duration = Duration::from_millis(250);

struct Slot {
    planner: Box<dyn Planner>,
    active: bool,
    next_run: tokio::time::Instant,
}

/// Hosts the fleet planners of one cloud node.
pub struct PlannerHost {
    running: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PlannerHost {
    /// Starts hosting the planners of `config` over `mirror`, sending their commands
    /// through `router`.
    pub fn start(
        config: &ClusterConfig,
        router: ClusterApi,
        mirror: Option<MirrorStore>,
        mut members: watch::Receiver<Arc<Vec<Member>>>,
    ) -> Result<Self, ClusterError> {
        let planners = planner::configured(&config.planners)?;
        let me = config.node_id.clone();
        let running = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopping) = watch::channel(false);
        let shown = running.clone();
        let task = tokio::spawn(async move {
            let Some(mirror) = mirror else {
                return;
            };
            let mut slots: Vec<Slot> = planners
                .into_iter()
                .map(|planner| Slot {
                    planner,
                    active: false,
                    next_run: tokio::time::Instant::now(),
                })
                .collect();
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopping.changed() => return,
                }
                let live = members.borrow_and_update().clone();
                for slot in &mut slots {
                    let name = slot.planner.name().to_string();
                    let here = placement::planner_host(&live, &name)
                        .is_some_and(|host| host.node_id == me);
                    if here != slot.active {
                        slot.active = here;
                        slot.next_run = tokio::time::Instant::now();
                        if here {
                            tracing::info!(planner = %name, "fleet planner now runs on this node");
                        } else {
                            tracing::info!(planner = %name, "fleet planner moved to another node");
                        }
                    }
                    if !slot.active || tokio::time::Instant::now() < slot.next_run {
                        continue;
                    }
                    slot.next_run = tokio::time::Instant::now() + slot.planner.interval();
                    let fleet =
                        FleetView::new(mirror.list("").into_iter().map(|row| row.report).collect());
                    let commands = slot.planner.plan(&fleet, Timestamp::now());
                    for command in commands {
                        send(&router, &name, command).await;
                    }
                }
                *shown.lock() = slots
                    .iter()
                    .filter(|s| s.active)
                    .map(|s| s.planner.name().to_string())
                    .collect();
            }
        });
        Ok(Self {
            running,
            stop,
            task,
        })
    }

    /// The planners running on this node now.
    pub fn running(&self) -> Vec<String> {
        self.running.lock().clone()
    }

    /// Stops hosting.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Sends one planned command as the planner, with its deadline, and logs the verdict.
async fn send(router: &ClusterApi, planner: &str, command: PlannedCommand) {
    let deadline = Timestamp(
        Timestamp::now()
            .0
            .saturating_add(i64::try_from(command.valid_for.as_micros()).unwrap_or(i64::MAX)),
    );
    let span = tracing::info_span!("planner_command", planner, asset = %command.asset, command = %command.command);
    let mut request = Request::new(pb::SendCommandRequest {
        asset_path: command.asset.to_string(),
        command: command.command.clone(),
        params: command
            .params
            .iter()
            .map(|(name, value)| named_value(name, *value))
            .collect(),
        idempotency_key: String::new(),
        deadline: Some(timestamp_to_proto(deadline)),
    });
    request.extensions_mut().insert(Caller {
        name: Arc::from(planner),
        role: Role::Planner,
    });
    let result = router.send_command(request).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(response) => {
            let response = response.into_inner();
            tracing::info!(reason = %command.reason, verdict = ?response.verdict, command_id = %response.command_id, "planner command decided");
        }
        Err(status) => {
            tracing::warn!(reason = %command.reason, code = ?status.code(), error = %status.message(), "planner command not delivered");
        }
    }
}
