//! The line actor: supervises a line's machine twins and aggregates them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use doppel_runtime::AssetPath;
use doppel_runtime::config::SupervisionSettings;
use doppel_runtime::internal::{
    Parked, Supervised, Supervisor, TwinActor, TwinArgs, TwinCore, TwinEntry, TwinHandle, TwinRef,
    TwinStart, TwinStatus, TwinsInternals,
};
use doppel_runtime::supervision::RestartIntensity;
use doppel_runtime::twin::Twins;

use super::board::{LineAggregate, LineStatus, StatusBoard, SupervisorEvent};
use super::plant::PlantMsg;

/// Messages a line actor handles.
pub enum LineMsg {
    /// A machine's status changed (slot in the line, status).
    Machine(usize, TwinStatus),
    /// Push aggregates held back by throttling to the plant.
    Push,
    /// Wake a passivated machine (slot in the line) from its parked state.
    Wake(usize, Parked),
    /// A machine's twin failed (slot in the line, the life that failed, why).
    Failed(usize, TwinRef, String),
}

/// A line as its machines' supervisor: their statuses and failures become its
/// messages.
struct LineSupervisor(ActorRef<LineMsg>);

impl Supervisor for LineSupervisor {
    fn status(&self, slot: usize, status: TwinStatus) {
        let _ = self.0.cast(LineMsg::Machine(slot, status));
    }

    fn failed(&self, slot: usize, twin: TwinRef, reason: String) {
        let _ = self.0.cast(LineMsg::Failed(slot, twin, reason));
    }
}

/// Which line actor supervises each twin, so a message for a passivated twin can
/// have it woken under its own line.
pub struct LineHomes {
    /// Per line (board index): its running actor.
    lines: parking_lot::RwLock<Vec<Option<ActorRef<LineMsg>>>>,
    /// Per twin (directory index): its line's board index.
    line_of: Vec<u32>,
    /// Per line: the directory index of its first machine.
    first: Vec<usize>,
}

impl LineHomes {
    /// Homes for lines of `sizes` machines, laid out in directory order.
    pub fn new(sizes: impl IntoIterator<Item = usize>) -> Self {
        let mut line_of = Vec::new();
        let mut first = Vec::new();
        for (line, size) in sizes.into_iter().enumerate() {
            first.push(line_of.len());
            line_of.extend(std::iter::repeat_n(line as u32, size));
        }
        Self {
            lines: parking_lot::RwLock::new(vec![None; first.len()]),
            line_of,
            first,
        }
    }

    /// Asks the line of `entry` to wake it from `parked`; hands `parked` back when the
    /// line has stopped. A line that has not started yet (the node is starting) starts
    /// the twin from the journal when it does, with what waits for it.
    pub fn wake(&self, entry: &TwinEntry, parked: Parked) -> Result<(), Option<Parked>> {
        let Some(&line) = self.line_of.get(entry.index) else {
            return Err(Some(parked));
        };
        let line = line as usize;
        let Some(actor) = self.lines.read().get(line).cloned().flatten() else {
            // What the twin parked is in the journal already.
            drop(parked);
            return Ok(());
        };
        let slot = entry.index - self.first[line];
        actor
            .cast(LineMsg::Wake(slot, parked))
            .map_err(|error| match error {
                ractor::MessagingErr::SendErr(LineMsg::Wake(_, parked)) => Some(parked),
                _ => None,
            })
    }

    fn register(&self, line: usize, actor: ActorRef<LineMsg>) {
        if let Some(home) = self.lines.write().get_mut(line) {
            *home = Some(actor);
        }
    }
}

/// Arguments of a line actor.
pub struct LineArgs {
    /// The line's path.
    pub path: AssetPath,
    /// The line's index on the status board.
    pub board_index: usize,
    /// The line's slot in its plant.
    pub plant_slot: usize,
    /// The machines, in topology order.
    pub machines: Vec<Arc<TwinEntry>>,
    /// Recovered state per machine for the first start; `None` recovers from the journal.
    pub initial: Vec<Option<TwinCore>>,
    /// The node's twins.
    pub twins: Twins,
    /// The plant actor to report to.
    pub plant: Option<ActorRef<PlantMsg>>,
    /// Where aggregates are published.
    pub board: Arc<StatusBoard>,
    /// Restart intensity.
    pub supervision: SupervisionSettings,
    /// Where the node's lines are, for waking passivated twins.
    pub homes: Arc<LineHomes>,
}

/// The line actor.
pub struct LineActor;

/// The line actor's state.
pub struct LineState {
    path: AssetPath,
    board_index: usize,
    plant_slot: usize,
    machines: Vec<Arc<TwinEntry>>,
    /// Per machine: its running twin, if it runs.
    running: Vec<Option<TwinHandle>>,
    supervisor: Arc<dyn Supervisor>,
    twins: Twins,
    plant: Option<ActorRef<PlantMsg>>,
    board: Arc<StatusBoard>,
    intensity: RestartIntensity,
    aggregate: LineAggregate,
    last_pushed: Option<LineStatus>,
    push_pending: bool,
}

impl Drop for LineState {
    /// However the line ends, its machines' twins do not outlive it.
    fn drop(&mut self) {
        for machine in self.running.iter().flatten() {
            machine.twin.stop();
        }
    }
}

/// Least spacing of line updates to the plant that only carry new figures.
const PUSH_INTERVAL_US: i64 = 250_000;

impl LineActor {
    async fn spawn_machine(
        state: &mut LineState,
        slot: usize,
        start: TwinStart,
    ) -> Result<(), ActorProcessingErr> {
        let args = TwinArgs {
            entry: state.machines[slot].clone(),
            kernel: state.twins.kernel().clone(),
            start,
            supervisor: Some(Supervised {
                supervisor: state.supervisor.clone(),
                slot,
            }),
        };
        state.running[slot] = Some(TwinActor::spawn(args).await?);
        Ok(())
    }

    /// Starts a passivated machine from its parked state; if that fails, from the
    /// journal, as a restart; if that fails too, the line escalates.
    async fn wake(
        state: &mut LineState,
        slot: usize,
        parked: Parked,
    ) -> Result<(), ActorProcessingErr> {
        let Some(entry) = state.machines.get(slot).cloned() else {
            return Ok(());
        };
        if !entry.is_waking() {
            // Started already, from the journal, while this line started.
            return Ok(());
        }
        let Err(error) = Self::spawn_machine(state, slot, TwinStart::Parked(parked)).await else {
            return Ok(());
        };
        tracing::error!(line = %state.path, machine = %entry.path, %error, "a passivated twin did not wake from its parked state; recovering it from the journal");
        if let Err(error) = Self::spawn_machine(state, slot, TwinStart::Recover).await {
            entry.wake_failed(None);
            let reason = format!("machine `{}` could not be woken: {error}", entry.path);
            return Err(Self::escalate(state, reason).await);
        }
        Ok(())
    }

    async fn escalate(state: &mut LineState, reason: String) -> ActorProcessingErr {
        tracing::error!(line = %state.path, %reason, "line gives up and escalates");
        state.board.publish(SupervisorEvent::Escalated {
            supervisor: state.path.clone(),
            reason: reason.clone(),
        });
        Self::stop_machines(state).await;
        reason.into()
    }

    /// Stops every running machine and waits for them, for at most 5 s in all.
    async fn stop_machines(state: &mut LineState) {
        let running: Vec<TwinHandle> = state.running.iter_mut().filter_map(Option::take).collect();
        for machine in &running {
            machine.twin.stop();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for machine in running {
            let _ = tokio::time::timeout_at(deadline, machine.task).await;
        }
    }

    /// A machine's twin failed: it restarts from the journal, unless the line has
    /// restarted too many within its window, and then the line escalates.
    async fn failed(
        state: &mut LineState,
        slot: usize,
        twin: TwinRef,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let current = state.running.get(slot).and_then(Option::as_ref);
        if !current.is_some_and(|running| running.twin.same(&twin)) {
            return Ok(());
        }
        state.running[slot] = None;
        let child = state.machines[slot].path.clone();
        tracing::warn!(line = %state.path, machine = %child, %reason, "machine twin crashed");
        if !state.intensity.record() {
            let reason = format!(
                "more than {} machine restarts within the restart window (last: `{child}`: {reason})",
                state.intensity.recent() - 1
            );
            return Err(Self::escalate(state, reason).await);
        }
        state
            .twins
            .kernel()
            .counters
            .restarts
            .fetch_add(1, Ordering::Relaxed);
        if let Err(error) = Self::spawn_machine(state, slot, TwinStart::Recover).await {
            let reason = format!("machine `{child}` could not be restarted: {error}");
            return Err(Self::escalate(state, reason).await);
        }
        state.board.publish(SupervisorEvent::Restarted {
            supervisor: state.path.clone(),
            child,
            reason,
        });
        Ok(())
    }
}

impl Actor for LineActor {
    type Msg = LineMsg;
    type State = LineState;
    type Arguments = LineArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LineMsg>,
        args: LineArgs,
    ) -> Result<LineState, ActorProcessingErr> {
        args.homes.register(args.board_index, myself.clone());
        let mut state = LineState {
            aggregate: LineAggregate::new(args.path.clone(), args.machines.len()),
            path: args.path,
            board_index: args.board_index,
            plant_slot: args.plant_slot,
            running: (0..args.machines.len()).map(|_| None).collect(),
            supervisor: Arc::new(LineSupervisor(myself.clone())),
            twins: args.twins,
            plant: args.plant,
            board: args.board,
            intensity: RestartIntensity::new(&args.supervision),
            last_pushed: None,
            push_pending: false,
            machines: args.machines,
        };
        let mut initial = args.initial;
        initial.resize_with(state.machines.len(), || None);
        for (slot, core) in initial.into_iter().enumerate() {
            let start = match core {
                Some(core) => TwinStart::Recovered(Box::new(core)),
                // A twin whose wake went down with the line's previous life starts
                // from the journal (what it parked was written there first).
                None if state.machines[slot].is_waking() => TwinStart::Recover,
                // A passivated twin wakes when a message comes for it.
                None if state.machines[slot].is_parked() => continue,
                None => TwinStart::Recover,
            };
            Self::spawn_machine(&mut state, slot, start).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<LineMsg>,
        state: &mut LineState,
    ) -> Result<(), ActorProcessingErr> {
        Self::stop_machines(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LineMsg>,
        message: LineMsg,
        state: &mut LineState,
    ) -> Result<(), ActorProcessingErr> {
        let force = match message {
            LineMsg::Machine(slot, status) => {
                state.aggregate.update(slot, status);
                state
                    .board
                    .set_line(state.board_index, state.aggregate.status());
                false
            }
            LineMsg::Push => {
                state.push_pending = false;
                true
            }
            LineMsg::Wake(slot, parked) => {
                Self::wake(state, slot, parked).await?;
                return Ok(());
            }
            LineMsg::Failed(slot, twin, reason) => {
                return Self::failed(state, slot, twin, reason).await;
            }
        };
        let status = state.aggregate.status();
        let (due, changed) = match &state.last_pushed {
            None => (true, true),
            Some(last) => {
                let urgent = force
                    || last.running != status.running
                    || last.stopped != status.stopped
                    || last.tripped != status.tripped
                    || (last.worst_health - status.worst_health).abs() >= 0.01;
                let changed = urgent
                    || last.throughput != status.throughput
                    || last.power_kw != status.power_kw;
                (
                    urgent || (changed && status.at.0 - last.at.0 >= PUSH_INTERVAL_US),
                    changed,
                )
            }
        };
        if let Some(plant) = &state.plant {
            if due {
                let _ = plant.cast(PlantMsg::Line(state.plant_slot, status.clone()));
                state.last_pushed = Some(status.clone());
            } else if changed && !state.push_pending {
                state.push_pending = true;
                let line = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(PUSH_INTERVAL_US as u64)).await;
                    let _ = line.cast(LineMsg::Push);
                });
            }
        }
        Ok(())
    }
}
