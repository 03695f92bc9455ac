//! The plant actor: supervises a plant's line actors and aggregates them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use doppel_runtime::AssetPath;
use doppel_runtime::config::SupervisionSettings;
use doppel_runtime::internal::{TwinCore, TwinEntry};
use doppel_runtime::supervision::RestartIntensity;
use doppel_runtime::twin::Twins;

use super::board::{LineStatus, PlantAggregate, StatusBoard, SupervisorEvent};
use super::line::{LineActor, LineArgs, LineHomes};

/// Messages a plant actor handles.
pub enum PlantMsg {
    /// A line's aggregates changed (slot in the plant, status).
    Line(usize, LineStatus),
}

/// One line as the plant knows it.
pub struct PlantLine {
    /// The line's path.
    pub path: AssetPath,
    /// Its index on the status board.
    pub board_index: usize,
    /// Its machines.
    pub machines: Vec<Arc<TwinEntry>>,
    /// Recovered state for the first start.
    pub initial: Vec<Option<TwinCore>>,
}

/// Arguments of a plant actor.
pub struct PlantArgs {
    /// The plant's path.
    pub path: AssetPath,
    /// Its index on the status board.
    pub board_index: usize,
    /// Its lines.
    pub lines: Vec<PlantLine>,
    /// The node's twins.
    pub twins: Twins,
    /// Where aggregates are published.
    pub board: Arc<StatusBoard>,
    /// Restart intensity (for lines).
    pub supervision: SupervisionSettings,
    /// Where the node's lines are, for waking passivated twins.
    pub homes: Arc<LineHomes>,
}

/// The plant actor.
pub struct PlantActor;

struct LineSlot {
    path: AssetPath,
    board_index: usize,
    machines: Vec<Arc<TwinEntry>>,
}

/// The plant actor's state.
pub struct PlantState {
    path: AssetPath,
    board_index: usize,
    lines: Vec<LineSlot>,
    aggregate: PlantAggregate,
    by_actor: HashMap<ActorId, usize>,
    twins: Twins,
    board: Arc<StatusBoard>,
    supervision: SupervisionSettings,
    intensity: RestartIntensity,
    homes: Arc<LineHomes>,
}

impl PlantActor {
    async fn spawn_line(
        myself: &ActorRef<PlantMsg>,
        state: &mut PlantState,
        slot: usize,
        initial: Vec<Option<TwinCore>>,
    ) -> Result<(), ActorProcessingErr> {
        let line = &state.lines[slot];
        let args = LineArgs {
            path: line.path.clone(),
            board_index: line.board_index,
            plant_slot: slot,
            machines: line.machines.clone(),
            initial,
            twins: state.twins.clone(),
            plant: Some(myself.clone()),
            board: state.board.clone(),
            supervision: state.supervision.clone(),
            homes: state.homes.clone(),
        };
        let (actor, _) = LineActor::spawn_linked(None, LineActor, args, myself.get_cell()).await?;
        state.by_actor.insert(actor.get_id(), slot);
        Ok(())
    }
}

impl Actor for PlantActor {
    type Msg = PlantMsg;
    type State = PlantState;
    type Arguments = PlantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PlantMsg>,
        args: PlantArgs,
    ) -> Result<PlantState, ActorProcessingErr> {
        let mut initials = Vec::new();
        let lines: Vec<LineSlot> = args
            .lines
            .into_iter()
            .map(|line| {
                initials.push(line.initial);
                LineSlot {
                    path: line.path,
                    board_index: line.board_index,
                    machines: line.machines,
                }
            })
            .collect();
        let mut state = PlantState {
            aggregate: PlantAggregate::new(args.path.clone(), lines.len()),
            path: args.path,
            board_index: args.board_index,
            lines,
            by_actor: HashMap::new(),
            twins: args.twins,
            board: args.board,
            intensity: RestartIntensity::new(&args.supervision),
            supervision: args.supervision,
            homes: args.homes,
        };
        for (slot, initial) in initials.into_iter().enumerate() {
            Self::spawn_line(&myself, &mut state, slot, initial).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<PlantMsg>,
        _state: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .stop_children_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<PlantMsg>,
        message: PlantMsg,
        state: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PlantMsg::Line(slot, status) => {
                state.aggregate.update(slot, status);
                state
                    .board
                    .set_plant(state.board_index, state.aggregate.status());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PlantMsg>,
        event: SupervisionEvent,
        state: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(slot) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let child = state.lines[slot].path.clone();
                let reason = error.to_string();
                if !state.intensity.record() {
                    let reason = format!(
                        "more than {} line restarts within the restart window (last: `{child}`: {reason})",
                        state.intensity.recent() - 1
                    );
                    tracing::error!(plant = %state.path, %reason, "plant gives up and escalates");
                    state.board.publish(SupervisorEvent::Escalated {
                        supervisor: state.path.clone(),
                        reason: reason.clone(),
                    });
                    myself
                        .stop_children_and_wait(
                            Some("plant escalated".into()),
                            Some(Duration::from_secs(10)),
                        )
                        .await;
                    return Err(reason.into());
                }
                tracing::warn!(plant = %state.path, line = %child, %reason, "restarting line from durable state");
                Self::spawn_line(&myself, state, slot, Vec::new()).await?;
                state.board.publish(SupervisorEvent::Restarted {
                    supervisor: state.path.clone(),
                    child,
                    reason,
                });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.by_actor.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
