//! The embeddable runtime: twin types, a topology, models and governors and a data
//! directory in; a running supervision tree and a handle to its twins out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use doppel_runtime::config::{
    ComponentSpec, ConfigError, RuntimeSettings, Topology, TwinType, TwinTypes,
};
use doppel_runtime::internal::{TwinCore, TwinMsg, TwinsInternals};
use doppel_runtime::progress::Progress;
use doppel_runtime::twin::Twins;
use doppel_runtime::{Components, Governor, Model};

use crate::error::StartError;
use crate::plant::{
    LineHomes, LineStatus, PlantActor, PlantArgs, PlantLine, PlantStatus, StatusBoard,
    SupervisorEvent,
};

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    types: TwinTypes,
    topology: Option<Topology>,
    data_dir: Option<PathBuf>,
    settings: RuntimeSettings,
    components: Components,
}

impl RuntimeBuilder {
    /// The twin types the topology uses.
    pub fn twin_types(mut self, types: TwinTypes) -> Self {
        self.types = types;
        self
    }

    /// The plant topology (checked against the twin types at start).
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Where the node keeps its redb file.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Runtime settings (journal batching, restart intensity, …).
    pub fn settings(mut self, settings: RuntimeSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The model and governor kinds registered so far.
    pub fn components(&self) -> &Components {
        &self.components
    }

    /// Registers a model kind, usable as `kind = "…"` in twin types.
    pub fn model<F>(mut self, kind: impl Into<String>, factory: F) -> Self
    where
        F: Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Model>, ConfigError>
            + Send
            + Sync
            + 'static,
    {
        self.components.model(kind, factory);
        self
    }

    /// Registers a governor kind, usable as `kind = "…"` in twin types.
    pub fn governor<F>(mut self, kind: impl Into<String>, factory: F) -> Self
    where
        F: Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Governor>, ConfigError>
            + Send
            + Sync
            + 'static,
    {
        self.components.governor(kind, factory);
        self
    }

    /// Opens the data directory, recovers every twin and starts the supervision tree;
    /// returns once every twin runs (or is parked).
    pub async fn start(self) -> Result<Runtime, StartError> {
        let mut runtime = self.launch().await?;
        if let Err(error) = runtime.started().await {
            runtime.shutdown().await;
            return Err(error);
        }
        Ok(runtime)
    }

    /// Opens the data directory and recovers every twin, then starts the supervision
    /// tree in the background and returns: the twins serve as their actors start
    /// ([`Runtime::started`] waits for all). Until its actor runs, a twin's input
    /// waits for it, and a request for it fails with
    /// [`Error::Starting`](doppel_runtime::Error::Starting).
    pub async fn launch(self) -> Result<Runtime, StartError> {
        let data_dir = self
            .data_dir
            .ok_or(StartError::Missing("a data directory"))?;
        let topology = self.topology.ok_or(StartError::Missing("a topology"))?;
        let machines: Vec<_> = topology
            .machines()
            .map(|m| (m.path.clone(), m.twin_type.clone()))
            .collect();
        let types = self.types;
        let components = self.components;
        let settings = self.settings;
        let supervision = settings.supervision.clone();
        let recovered = tokio::task::spawn_blocking(move || {
            Twins::open(&data_dir, &types, &machines, components, settings)
        })
        .await??;
        let twins = recovered.twins;
        let mut cores: Vec<Option<TwinCore>> = recovered.cores;
        let homes =
            Arc::new(LineHomes::new(topology.plants.iter().flat_map(|plant| {
                plant.lines.iter().map(|line| line.machines.len())
            })));
        {
            let homes = homes.clone();
            *twins.kernel().waker.write() =
                Some(Arc::new(move |entry, parked| homes.wake(entry, parked)));
        }

        let mut plant_statuses = Vec::new();
        let mut line_statuses = Vec::new();
        let mut plants = Vec::new();
        let mut next_machine = 0;
        for (plant_index, plant) in topology.plants.iter().enumerate() {
            let mut lines = Vec::new();
            for line in &plant.lines {
                let count = line.machines.len();
                let entries =
                    twins.directory().entries()[next_machine..next_machine + count].to_vec();
                let initial = cores[next_machine..next_machine + count]
                    .iter_mut()
                    .map(Option::take)
                    .collect();
                next_machine += count;
                lines.push(PlantLine {
                    path: line.path.clone(),
                    board_index: line_statuses.len(),
                    machines: entries,
                    initial,
                });
                line_statuses.push(LineStatus::new(line.path.clone(), count));
            }
            plant_statuses.push(PlantStatus {
                path: plant.path.clone(),
                throughput: 0.0,
                power_kw: 0.0,
                energy_kwh: 0.0,
                worst_health: 1.0,
                tripped: 0,
                at: doppel_runtime::Timestamp(0),
            });
            plants.push((plant.path.clone(), plant_index, lines));
        }
        let board = Arc::new(StatusBoard::new(
            plant_statuses,
            line_statuses,
            twins.kernel().supervision.clone(),
        ));
        for entry in twins.directory().entries() {
            entry.mark_starting();
        }
        let (root, _) = match Actor::spawn(None, NodeRoot, ()).await {
            Ok(root) => root,
            Err(error) => {
                for entry in twins.directory().entries() {
                    entry.start_failed();
                }
                return Err(error.into());
            }
        };
        let total = twins.len();
        let starting = Progress::new("starting", total);
        let watcher = {
            let twins = twins.clone();
            tokio::spawn(async move {
                let mut progress = Progress::new("starting", total);
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let running = twins
                        .directory()
                        .entries()
                        .iter()
                        .filter(|entry| entry.actor().is_some() || entry.is_parked())
                        .count();
                    progress.at(running);
                }
            })
        };
        let starter = {
            let twins = twins.clone();
            let board = board.clone();
            let root = root.clone();
            tokio::spawn(async move {
                let mut spawned = Ok(());
                for (path, board_index, lines) in plants {
                    let args = PlantArgs {
                        path,
                        board_index,
                        lines,
                        twins: twins.clone(),
                        board: board.clone(),
                        supervision: supervision.clone(),
                        homes: homes.clone(),
                    };
                    let plant =
                        PlantActor::spawn_linked(None, PlantActor, args, root.get_cell()).await;
                    if let Err(error) = plant {
                        spawned = Err(StartError::from(error));
                        break;
                    }
                }
                watcher.abort();
                // A twin whose line did not start is down: what waited for it learns
                // it is unavailable.
                let failed = twins
                    .directory()
                    .entries()
                    .iter()
                    .filter(|entry| {
                        let failed = entry.start_failed();
                        if spawned.is_err() {
                            // A wake that waited for a line that never started.
                            entry.release_waiting();
                        }
                        failed
                    })
                    .count();
                if failed > 0 {
                    tracing::error!(twins = failed, "twins did not start");
                }
                if spawned.is_ok() {
                    starting.finish();
                }
                spawned
            })
        };
        let requester = twins.clone();
        twins.kernel().journal.on_snapshot_needed(move |id| {
            // A parked twin's snapshot holds its state already: it is not woken.
            if let Some(entry) = requester.directory().by_id(id) {
                let _ = requester
                    .kernel()
                    .send_if(entry, TwinMsg::Snapshot, |_| false);
            }
        });
        let sweeps = Sweeps(
            [twins.spawn_freshness_sweep(), twins.spawn_rollout_watch()]
                .into_iter()
                .chain(twins.spawn_passivation_sweep())
                .collect(),
        );
        Ok(Runtime {
            twins,
            board,
            root,
            topology,
            sweeps,
            starter: Some(starter),
        })
    }
}

/// A running node: its twins, their supervision tree and aggregates.
pub struct Runtime {
    twins: Twins,
    board: Arc<StatusBoard>,
    root: ActorRef<()>,
    topology: Topology,
    sweeps: Sweeps,
    /// Starts the supervision tree; `None` once it has.
    starter: Option<tokio::task::JoinHandle<Result<(), StartError>>>,
}

/// The node's freshness and passivation sweeps and its canary checks
/// ([`Twins::spawn_freshness_sweep`], [`Twins::spawn_passivation_sweep`],
/// [`Twins::spawn_rollout_watch`]), stopped with the runtime.
struct Sweeps(Vec<tokio::task::JoinHandle<()>>);

impl Sweeps {
    /// Stops the sweeps and waits until their tasks (and their handles on the twins)
    /// are gone.
    async fn stop(&mut self) {
        for task in self.0.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Sweeps {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Runtime {
    /// Starts building a runtime with the standard models and governors registered.
    pub fn builder() -> RuntimeBuilder {
        let mut components = Components::new();
        crate::model::register(&mut components);
        crate::governor::register(&mut components);
        RuntimeBuilder {
            types: TwinTypes::default(),
            topology: None,
            data_dir: None,
            settings: RuntimeSettings::default(),
            components,
        }
    }

    /// Waits until every twin runs (or is parked); the error of a supervision tree that
    /// did not start (whose twins are down), once.
    pub async fn started(&mut self) -> Result<(), StartError> {
        match self.starter.take() {
            Some(starter) => starter.await?,
            None => Ok(()),
        }
    }

    /// The handle to ingest samples, send commands, read state and subscribe.
    pub fn twins(&self) -> &Twins {
        &self.twins
    }

    /// The topology the runtime runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every line's aggregates.
    pub fn lines(&self) -> Vec<LineStatus> {
        self.board.lines()
    }

    /// Every plant's aggregates.
    pub fn plants(&self) -> Vec<PlantStatus> {
        self.board.plants()
    }

    /// Subscribes to supervision events (restarts, escalations).
    pub fn supervision_events(&self) -> tokio::sync::broadcast::Receiver<SupervisorEvent> {
        self.board.events()
    }

    /// Stops every actor, commits what the journal holds and closes it.
    pub async fn shutdown(mut self) {
        // A tree still starting finishes first, so no twin is left waiting for it.
        let _ = self.started().await;
        self.sweeps.stop().await;
        self.root
            .stop_children_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        self.root.stop(None);
        for entry in self.twins.directory().entries() {
            entry.release_waiting();
        }
        let journal = self.twins.kernel().journal.clone();
        let _ = tokio::task::spawn_blocking(move || journal.stop()).await;
    }
}

/// The root of the node's tree. A plant that fails beyond its restart intensity
/// stays down (its twins stop) and is reported; other plants keep running.
struct NodeRoot;

impl Actor for NodeRoot {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, error) = event {
            tracing::error!(%error, "a plant failed beyond its restart intensity; its twins are stopped");
        }
        Ok(())
    }
}
