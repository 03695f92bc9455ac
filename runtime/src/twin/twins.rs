//! The twins a node hosts: the shared kernel (journal, components, buses, counters)
//! and [`Twins`], the handle that validates input and routes it to twin actors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, oneshot};

use super::actor::{AlarmOutcome, CommandOutcome, TwinMsg};
use super::alarm::{Alarm, AlarmResponse};
use super::core::{Deployed, ModelPlan, PlannedShadow, TwinCore};
use super::directory::{Directory, Sent, TwinEntry};
use super::passivation::{IDLE_ROUNDS, Parked, Waker};
use super::state::{ChannelCondition, DeliveryReport, SampleRejection, check_sample};
use super::{Actuation, CommandVerdict, TwinEvent, TwinReport, TwinSummary, WhatIf};
use crate::audit::{AuditKind, AuditRecord};
use crate::command::{Command, Origin};
use crate::components::{ActuationNeed, Components};
use crate::config::{RuntimeSettings, TwinType, TwinTypes};
use crate::error::Error;
use crate::journal::{
    AckGroup, Journal, JournalWrite, Receipt, Snapshot, Store, StoreError, Ticket,
};
use crate::metrics::{ConnectorReport, ConnectorStatus, CounterSnapshot, Counters, SourceCounts};
use crate::model::deploy::{ActiveDeployment, ActiveModels, build_packaged, choose};
use crate::path::AssetPath;
use crate::progress::Progress;
use crate::sample::{ChannelId, Reading, Sample, SourceId};
use crate::time::Timestamp;

/// Most journal batches one history read scans, newest first.
const JOURNAL_HISTORY_BATCHES: usize = 4096;

/// Capacity of the change and actuation broadcast buffers; slower subscribers lag.
const BUS_CAPACITY: usize = 16_384;

/// One refused reading, for a source's tally.
const REFUSED_ONE: SourceCounts = SourceCounts {
    applied: 0,
    late: 0,
    duplicate: 0,
    refused: 1,
};

/// How often the node looks for twins with a channel past its maximum age.
pub const FRESHNESS_INTERVAL: Duration = Duration::from_millis(200);

/// A message a twin did not take ([`Kernel::send`]): the twin is down, parked and not
/// woken for it, or not started yet.
pub struct Unsent {
    /// The message, handed back.
    pub message: Box<TwinMsg>,
    /// The message is a request and the twin has not started yet.
    pub starting: bool,
}

/// What every twin actor of a node shares.
pub struct Kernel {
    /// The node's journal.
    pub journal: Journal,
    /// Runtime settings.
    pub settings: RuntimeSettings,
    /// Model and governor factories.
    pub components: Components,
    /// The node's twin types, hosted or not (a cloud node knows its fleet's types).
    pub types: TwinTypes,
    /// What the node's supervisors did lately (restarts, escalations).
    pub supervision: crate::supervision::SupervisionLog,
    /// Twin changes, for subscribers.
    pub changes: broadcast::Sender<TwinEvent>,
    /// Live change subscriptions; twins skip building change events while it is zero.
    /// (The broadcast's own receiver count takes a lock; this is read per message.)
    pub change_subscribers: Arc<AtomicUsize>,
    /// Commands and safety actions going to machines.
    pub actuations: broadcast::Sender<Actuation>,
    /// The verdict of every command, once durable.
    pub verdicts: broadcast::Sender<CommandVerdict>,
    /// Counters.
    pub counters: Counters,
    /// Bounds samples accepted but not yet durable.
    pub limiter: Arc<Semaphore>,
    /// Set once this node must stop actuating its twins (another node owns them), with
    /// the reason; never cleared while the node runs.
    pub fenced: std::sync::OnceLock<String>,
    /// Starts parked twins' actors; set by the supervision tree.
    pub waker: parking_lot::RwLock<Option<Arc<Waker>>>,
    /// When alarms became active, for ISA-18.2's rate figures.
    pub alarm_log: super::alarm::AlarmLog,
    /// Prefixes of live watches (`None`: every twin); twins under one stay awake.
    watched: Arc<parking_lot::Mutex<Vec<Option<AssetPath>>>>,
    /// The model deployments in force, read whenever a twin's models are built.
    pub models: ActiveModels,
}

impl Kernel {
    /// Sends `message` to a twin, waking it if it is parked. Hands the message back
    /// when the twin is down (or its mailbox lost it).
    pub fn send(&self, entry: &Arc<TwinEntry>, message: TwinMsg) -> Result<(), Unsent> {
        self.send_if(entry, message, |_| true)
    }

    /// Sends `message` to a twin; a parked twin is woken for it only when `wakes` says
    /// so, else the message comes back.
    pub fn send_if(
        &self,
        entry: &Arc<TwinEntry>,
        message: TwinMsg,
        wakes: impl FnOnce(&Parked) -> bool,
    ) -> Result<(), Unsent> {
        match entry.send(message, wakes) {
            Sent::Delivered | Sent::Queued => Ok(()),
            Sent::Wake(parked) => {
                self.wake(entry, parked);
                Ok(())
            }
            Sent::Refused(message) => Err(Unsent {
                message: Box::new(message),
                starting: false,
            }),
            Sent::Starting(message) => Err(Unsent {
                message: Box::new(message),
                starting: true,
            }),
        }
    }

    fn wake(&self, entry: &Arc<TwinEntry>, parked: Parked) {
        self.counters.woken.fetch_add(1, Ordering::Relaxed);
        let waker = self.waker.read().clone();
        let outcome = match waker {
            Some(waker) => waker(entry, parked),
            None => Err(Some(parked)),
        };
        if let Err(parked) = outcome {
            tracing::warn!(asset = %entry.path, "a passivated twin cannot wake: its supervisor is not running");
            entry.wake_failed(parked);
        }
    }

    /// The twin a parked state holds, rebuilt.
    pub fn unpark(&self, entry: &TwinEntry, parked: Parked) -> Result<TwinCore, Error> {
        let mut core = self.new_core(entry)?;
        if let Some(bytes) = &parked.snapshot {
            core.restore(Snapshot::decode(bytes).map_err(journal_error)?)?;
        }
        Ok(core)
    }

    /// A twin rebuilt from its latest snapshot alone.
    fn rebuild_from_snapshot(&self, entry: &TwinEntry) -> Result<TwinCore, Error> {
        let mut core = self.new_core(entry)?;
        if let Some((_, snapshot)) = self
            .journal
            .store()
            .snapshot(&entry.path)
            .map_err(journal_error)?
        {
            core.restore(snapshot)?;
        }
        Ok(core)
    }

    fn new_core(&self, entry: &TwinEntry) -> Result<TwinCore, Error> {
        let mut models = self.components.build_models(&entry.twin_type)?;
        let governors = self.components.build_governors(&entry.twin_type)?;
        let mut deployed = Vec::new();
        let mut shadows = Vec::new();
        if !self.models.get().is_empty() {
            for (index, spec) in entry.twin_type.models.iter().enumerate() {
                let plan = self.model_plan(entry, &spec.name)?;
                let (model, from) = plan.production;
                if let Some(from) = from {
                    models[index] = model;
                    deployed.push((spec.name.clone(), from));
                }
                shadows.extend(plan.shadow);
            }
        }
        let mut core = TwinCore::new(
            entry.id,
            entry.path.clone(),
            entry.twin_type.clone(),
            models,
            governors,
            self.settings.history_capacity,
        );
        for (name, deployed) in deployed {
            core.set_deployed(&name, deployed);
        }
        for shadow in shadows {
            core.add_shadow(shadow);
        }
        Ok(core)
    }

    /// What the twin `entry` should run as its model `model` under the active
    /// deployments. A package checked when deployed that no longer builds (the type
    /// changed since) leaves the type's model running in production, and runs no
    /// shadow, loudly.
    pub(super) fn model_plan(&self, entry: &TwinEntry, model: &str) -> Result<ModelPlan, Error> {
        let spec = (entry.twin_type.models.iter())
            .find(|spec| spec.name == model)
            .ok_or_else(|| {
                crate::model::registry::RegistryError::Refused(format!(
                    "no model `{model}` on {}",
                    entry.path
                ))
            })?;
        let active = self.models.get();
        let choice = choose(&active, &entry.path, &entry.twin_type.name, model);
        let build = |chosen: &ActiveDeployment, role: &str| match self
            .build_deployed(entry, model, chosen)
        {
            Ok(built) => Some(built),
            Err(error) => {
                tracing::error!(asset = %entry.path, model, deployment = chosen.deployment.id, %error, "a deployed {role} model does not build; it does not run");
                None
            }
        };
        let production = match &choice.production {
            Some(chosen) => build(chosen, "production").map(|m| (m, Some(Deployed::from(chosen)))),
            None => None,
        };
        let production = match production {
            Some(production) => production,
            None => (self.components.build_model(spec, &entry.twin_type)?, None),
        };
        let shadow = match (&choice.baseline, &choice.shadow) {
            (Some(replaced), _) => {
                let canary = choice.production.as_ref().map_or(0, |c| c.deployment.id);
                let model = match replaced {
                    Some(chosen) => build(chosen, "baseline"),
                    None => Some(self.components.build_model(spec, &entry.twin_type)?),
                };
                model.map(|model| PlannedShadow {
                    model,
                    deployment: canary,
                    baseline: true,
                })
            }
            (None, Some(chosen)) => build(chosen, "shadow").map(|model| PlannedShadow {
                model,
                deployment: chosen.deployment.id,
                baseline: false,
            }),
            (None, None) => None,
        };
        Ok(ModelPlan { production, shadow })
    }

    /// Builds a deployed package as model `name` of the twin `entry`.
    pub(super) fn build_deployed(
        &self,
        entry: &TwinEntry,
        name: &str,
        active: &ActiveDeployment,
    ) -> Result<Box<dyn crate::model::Model>, Error> {
        Ok(build_packaged(
            &self.components,
            &entry.twin_type,
            name,
            &active.package,
        )?)
    }

    /// Rebuilds one twin from its latest snapshot and the journal tail after it.
    pub fn recover_one(&self, entry: &TwinEntry) -> Result<TwinCore, Error> {
        let mut core = self.new_core(entry)?;
        let store = self.journal.store();
        let from = match store.snapshot(&entry.path).map_err(journal_error)? {
            Some((batch, snapshot)) => {
                core.restore(snapshot)?;
                batch
            }
            None => 0,
        };
        store
            .replay(from, |_, record| {
                if record.twin == entry.id {
                    core.replay(&record);
                }
            })
            .map_err(journal_error)?;
        Ok(core)
    }

    /// Rebuilds every twin: the journal tail first (twins with events after their
    /// snapshot are rebuilt from it), then every other twin from its snapshot, one at a
    /// time. A twin that passivates and would have nothing to do at once is parked
    /// instead of kept (`None`): memory holds one rebuilt twin at a time for those.
    /// Returns the twins kept, and for each whether the store holds no snapshot of its
    /// state yet (it has none, or the journal held events after it).
    fn recover_all(
        &self,
        directory: &Directory,
    ) -> Result<(Vec<Option<TwinCore>>, Vec<bool>), Error> {
        let store = self.journal.store();
        let entries = directory.entries();
        let batches = store
            .snapshot_batches(entries.iter().map(|entry| &entry.path))
            .map_err(journal_error)?;
        let mut cores: Vec<Option<TwinCore>> = (0..entries.len()).map(|_| None).collect();
        let mut outdated = vec![false; entries.len()];
        if let Some(from) = batches.iter().map(|batch| batch.unwrap_or(0)).min() {
            let by_id: HashMap<u32, usize> = entries.iter().map(|e| (e.id, e.index)).collect();
            let mut failure = None;
            store
                .replay(from, |batch, record| {
                    let Some(&index) = by_id.get(&record.twin) else {
                        return;
                    };
                    if batches[index].is_some_and(|snapshot| batch < snapshot) {
                        return;
                    }
                    let core = match &mut cores[index] {
                        Some(core) => core,
                        slot => match self.rebuild_from_snapshot(&entries[index]) {
                            Ok(core) => slot.insert(core),
                            Err(error) => {
                                failure.get_or_insert(error);
                                return;
                            }
                        },
                    };
                    if core.replay(&record) {
                        outdated[index] = true;
                    }
                })
                .map_err(journal_error)?;
            if let Some(error) = failure {
                return Err(error);
            }
        }
        let now = Timestamp::now();
        let max_age = self.settings.max_age();
        let mut progress = Progress::new("restoring", entries.len());
        let mut index = 0;
        store.snapshots(entries.iter().map(|entry| &entry.path), |found| {
            progress.at(index);
            let entry = &entries[index];
            let parks = entry.passivates();
            let mut core = match (cores[index].take(), found) {
                (Some(core), _) => core,
                (None, Some((_, snapshot))) => {
                    let mut core = self.new_core(entry)?;
                    core.restore(snapshot)?;
                    core
                }
                (None, None) if parks => {
                    entry.park_at_start(Parked::fresh(&entry.twin_type));
                    index += 1;
                    return Ok(());
                }
                (None, None) => {
                    outdated[index] = true;
                    self.new_core(entry)?
                }
            };
            let due = core.stale_due(max_age);
            if parks && due.is_none_or(|due| due > now) {
                let bytes = core.snapshot().map_err(journal_error)?;
                if std::mem::take(&mut outdated[index]) {
                    self.journal.write(JournalWrite::snapshot(
                        entry.id,
                        entry.path.clone(),
                        bytes.clone(),
                    ));
                }
                entry.set_stale_at(due);
                entry.park_at_start(Parked::new(bytes, &core));
            } else {
                cores[index] = Some(core);
            }
            index += 1;
            Ok::<(), Error>(())
        })?;
        progress.finish();
        Ok((cores, outdated))
    }
}

fn journal_error(error: impl Into<StoreError>) -> Error {
    Error::Journal(error.into())
}

/// Alarms of many twins ([`Twins::alarms`]).
#[derive(Debug, Clone, Default)]
pub struct AlarmList {
    /// Each alarm with its twin.
    pub alarms: Vec<(AssetPath, Alarm)>,
    /// Twins that did not answer.
    pub unavailable: Vec<AssetPath>,
}

/// The twins a node hosts, before their actors start: recovered state to hand to them.
pub struct Recovered {
    /// The handle to route input to the twins once their actors run.
    pub twins: Twins,
    /// Recovered cores, in directory order; `None` for a twin parked at start (see
    /// [`passivation`](super::passivation)).
    pub cores: Vec<Option<TwinCore>>,
}

/// Routes samples, commands and reads to a node's twin actors, validating input at
/// the boundary. Cheap to clone.
#[derive(Clone)]
pub struct Twins {
    pub(super) kernel: Arc<Kernel>,
    pub(super) directory: Arc<Directory>,
}

/// Where a sample goes: a twin (directory index) and a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelTarget {
    /// The twin's directory index.
    pub twin: usize,
    /// The channel.
    pub channel: ChannelId,
}

/// The result of a batch ingest: a receipt for what was accepted, and what was not.
pub struct BatchReceipt {
    /// Resolves when every accepted sample is durable.
    pub receipt: Receipt,
    /// Samples handed to twins.
    pub accepted: usize,
    /// Refused samples, by position in the batch.
    pub rejected: Vec<(usize, SampleRejection)>,
}

impl Twins {
    /// Opens the node's redb file under `data_dir`, recovers every twin of
    /// `machines` and returns the handle and the recovered cores for the actors.
    pub fn open(
        data_dir: &Path,
        types: &TwinTypes,
        machines: &[(AssetPath, String)],
        components: Components,
        settings: RuntimeSettings,
    ) -> Result<Recovered, Error> {
        std::fs::create_dir_all(data_dir).map_err(journal_error)?;
        let store = Store::open(&data_dir.join("doppel.redb")).map_err(journal_error)?;
        let paths: Vec<AssetPath> = machines.iter().map(|(p, _)| p.clone()).collect();
        let ids = store.twin_ids(&paths).map_err(journal_error)?;
        let mut twins = Vec::with_capacity(machines.len());
        for ((path, type_name), id) in machines.iter().zip(ids) {
            let twin_type: Arc<TwinType> = types.get(type_name).cloned().ok_or_else(|| {
                Error::Config(crate::config::ConfigError::at(
                    "topology",
                    None,
                    format!("machine `{path}` has unknown type `{type_name}`"),
                ))
            })?;
            twins.push((path.clone(), twin_type, id));
        }
        let directory = Arc::new(Directory::new(twins));
        if settings.passivation.idle().is_some() {
            let mut tripping: HashMap<&str, bool> = HashMap::new();
            for entry in directory.entries() {
                let trips = match tripping.get(entry.twin_type.name.as_str()) {
                    Some(trips) => *trips,
                    None => {
                        let trips = components
                            .build_governors(&entry.twin_type)?
                            .iter()
                            .any(|governor| !governor.safety_commands().is_empty());
                        tripping.insert(entry.twin_type.name.as_str(), trips);
                        trips
                    }
                };
                entry.set_passivates(settings.passivation.tripping || !trips);
            }
        }
        let active = super::deploy::active_deployments(&store)?;
        let journal = Journal::start(store, &settings.journal).map_err(journal_error)?;
        let (changes, _) = broadcast::channel(BUS_CAPACITY);
        let (actuations, _) = broadcast::channel(BUS_CAPACITY);
        let (verdicts, _) = broadcast::channel(BUS_CAPACITY);
        let limiter = Arc::new(Semaphore::new(
            settings
                .journal
                .max_in_flight
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let kernel = Arc::new(Kernel {
            journal,
            settings,
            components,
            types: types.clone(),
            supervision: crate::supervision::SupervisionLog::default(),
            changes,
            change_subscribers: Arc::new(AtomicUsize::new(0)),
            actuations,
            verdicts,
            counters: Counters::default(),
            limiter,
            fenced: std::sync::OnceLock::new(),
            waker: parking_lot::RwLock::new(None),
            alarm_log: super::alarm::AlarmLog::default(),
            watched: Arc::default(),
            models: ActiveModels::default(),
        });
        kernel.models.set(active);
        let (mut cores, outdated) = kernel.recover_all(&directory)?;
        // A fresh snapshot of every twin whose snapshot no longer holds its state lets
        // the journal before it be truncated: the committer's record of which twins
        // have events after their snapshot starts empty.
        let mut progress = Progress::new("snapshotting", cores.len());
        for (done, core) in cores.iter_mut().enumerate() {
            progress.at(done);
            let Some(core) = core.as_mut().filter(|_| outdated[done]) else {
                continue;
            };
            let snapshot = core.snapshot().map_err(journal_error)?;
            kernel.journal.write(JournalWrite::snapshot(
                core.id(),
                core.path().clone(),
                snapshot,
            ));
        }
        kernel.journal.flush_blocking()?;
        progress.finish();
        Ok(Recovered {
            twins: Twins { kernel, directory },
            cores,
        })
    }

    /// The asset path and channel name of a target, for logs; `None` for a twin index
    /// this node does not host.
    pub fn describe(&self, target: ChannelTarget) -> Option<(&AssetPath, &str)> {
        let entry = self.directory.at(target.twin)?;
        let channel = entry.twin_type.channel_spec(target.channel)?;
        Some((&entry.path, channel.name.as_str()))
    }

    /// Asks every twin whose freshness deadline has passed by `now` to sweep its
    /// channels; returns how many were asked. O(twins), one atomic read each.
    pub fn sweep_freshness(&self, now: Timestamp) -> usize {
        let mut asked = 0;
        for entry in self.directory.entries() {
            // A twin whose actor is between lives sweeps when it starts; a parked one
            // wakes for it.
            if entry.take_stale_at(now) && self.kernel.send(entry, TwinMsg::Freshness).is_ok() {
                asked += 1;
            }
        }
        asked
    }

    /// Runs the freshness sweep every [`FRESHNESS_INTERVAL`] until the task is aborted:
    /// a channel goes stale within that interval of reaching its maximum age.
    pub fn spawn_freshness_sweep(&self) -> tokio::task::JoinHandle<()> {
        let twins = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(FRESHNESS_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                twins.sweep_freshness(Timestamp::now());
            }
        })
    }

    /// Puts channels under conditions their source reported (a failure without a
    /// value, a death certificate); returns a receipt that resolves once they are
    /// durable.
    pub fn mark(
        &self,
        conditions: impl IntoIterator<Item = (ChannelTarget, ChannelCondition)>,
    ) -> Receipt {
        let mut groups: Vec<(usize, Vec<(ChannelId, ChannelCondition)>)> = Vec::new();
        for (target, condition) in conditions {
            if self.directory.at(target.twin).is_none() {
                continue;
            }
            match groups.iter_mut().find(|(twin, _)| *twin == target.twin) {
                Some((_, list)) => list.push((target.channel, condition)),
                None => groups.push((target.twin, vec![(target.channel, condition)])),
            }
        }
        let (group, receipt) = AckGroup::new(groups.len());
        for (twin, conditions) in groups {
            let entry = &self.directory.entries()[twin];
            let ticket = Ticket::new(Some(group.clone()), 0, None, entry.path.clone());
            // A twin that is down drops the ticket: the receipt says it is unavailable.
            let _ = self
                .kernel
                .send(entry, TwinMsg::Conditions(conditions, ticket));
        }
        receipt
    }

    /// Tells every twin that `sources` lost touch (a connector lost its session,
    /// subscription or broker) for `reason`: the channels whose current value came
    /// from one of them go stale at once.
    pub fn sources_lost(&self, sources: &[SourceId], reason: &str) {
        let sources: Arc<[SourceId]> = sources.into();
        let reason: Arc<str> = reason.into();
        for entry in self.directory.entries() {
            // A parked twin wakes only if one of its trusted values came from them.
            let message = TwinMsg::SourcesLost(sources.clone(), reason.clone());
            let _ = self
                .kernel
                .send_if(entry, message, |parked| parked.fed_by(&sources));
        }
    }

    /// A twin's listing line. A parked twin's is read without waking it; a running
    /// twin is asked.
    pub async fn summary(&self, path: &AssetPath) -> Result<TwinSummary, Error> {
        let entry = self.entry(path)?;
        if let Some((summary, alarms)) = entry.parked_summary() {
            return Ok(TwinSummary {
                asset: entry.path.clone(),
                twin_type: entry.twin_type.name.clone(),
                version: summary.version,
                run_state: summary.run_state,
                health: summary.health,
                alarms,
            });
        }
        let report = self.report(path).await?;
        Ok(TwinSummary {
            asset: report.asset,
            twin_type: report.twin_type,
            version: report.version,
            run_state: report.run_state,
            health: report.health,
            alarms: report.alarms,
        })
    }

    /// What the node's supervisors did lately: restarts and escalations, oldest first.
    pub fn supervision(&self) -> Vec<crate::supervision::SupervisionRecord> {
        self.kernel.supervision.recent()
    }

    /// A twin type the node knows by name, hosted or not.
    pub fn twin_type(&self, name: &str) -> Option<&Arc<TwinType>> {
        self.kernel.types.get(name)
    }

    /// How many twins this node hosts.
    pub fn len(&self) -> usize {
        self.directory.len()
    }

    /// True when this node hosts no twins (a cloud node).
    pub fn is_empty(&self) -> bool {
        self.directory.is_empty()
    }

    /// The paths of the twins this node hosts, in directory order.
    pub fn paths(&self) -> impl Iterator<Item = &AssetPath> {
        self.directory.entries().iter().map(|entry| &entry.path)
    }

    /// The entry of a twin.
    pub fn entry(&self, path: &AssetPath) -> Result<&Arc<TwinEntry>, Error> {
        self.directory
            .get(path)
            .ok_or_else(|| Error::UnknownAsset(path.clone()))
    }

    /// What of `twin_type` must reach the machine: every desired value its governors'
    /// safety actions and its commands set (see [`Components::actuation_needs`]).
    pub fn actuation_needs(&self, twin_type: &TwinType) -> Result<Vec<ActuationNeed>, Error> {
        Ok(self.kernel.components.actuation_needs(twin_type)?)
    }

    /// Resolves a twin and channel by name, for repeated ingest.
    pub fn target(&self, path: &AssetPath, channel: &str) -> Result<ChannelTarget, Error> {
        let entry = self.entry(path)?;
        let channel_id = entry
            .twin_type
            .channel(channel)
            .ok_or_else(|| Error::UnknownChannel {
                asset: path.clone(),
                channel: channel.to_string(),
            })?;
        Ok(ChannelTarget {
            twin: entry.index,
            channel: channel_id,
        })
    }

    /// The durable id of a named source, registering it if new.
    pub fn source(&self, name: &str) -> Result<SourceId, Error> {
        let id = self
            .kernel
            .journal
            .store()
            .source_id(name)
            .map_err(journal_error)?;
        self.kernel.counters.register_source(id, name);
        Ok(SourceId(id))
    }

    /// What the twins made of each registered source's readings (applied, late,
    /// duplicate, refused), by source name.
    pub fn source_counts(&self) -> Vec<(String, SourceCounts)> {
        self.kernel.counters.sources()
    }

    /// Registers a connector feeding these twins, so that [`Twins::connectors`] and the
    /// node's status report it. Held weakly: dropping the connector unregisters it.
    pub fn register_connector(&self, connector: &Arc<dyn ConnectorReport>) {
        self.kernel.counters.register_connector(connector);
    }

    /// What every registered connector received and what became of it.
    pub fn connectors(&self) -> Vec<ConnectorStatus> {
        self.kernel.counters.connectors()
    }

    fn check(&self, entry: &TwinEntry, sample: &Sample) -> Result<(), SampleRejection> {
        let settings = &self.kernel.settings;
        check_sample(
            &entry.twin_type,
            sample,
            settings.max_future_skew_secs.saturating_mul(1_000_000) as i64,
            settings.max_sample_age_secs.saturating_mul(1_000_000) as i64,
        )
    }

    /// Ingests one reading for `path`/`channel`. Bad input is refused with a typed
    /// error and counted; an accepted reading returns a receipt that resolves once it
    /// is durable.
    pub async fn ingest(
        &self,
        path: &AssetPath,
        channel: &str,
        reading: Reading,
    ) -> Result<Receipt, Error> {
        let target = match self.target(path, channel) {
            Ok(target) => target,
            Err(error) => {
                let kind = match error {
                    Error::UnknownAsset(_) => SampleRejection::UnknownAsset,
                    _ => SampleRejection::UnknownChannel,
                };
                self.kernel.counters.reject(kind, &error);
                self.kernel.counters.tally(reading.source.0, REFUSED_ONE);
                return Err(error);
            }
        };
        let batch = self
            .ingest_batch(std::iter::once((target, reading)))
            .await?;
        if let Some((_, reason)) = batch.rejected.first() {
            return Err(Error::SampleRejected {
                asset: path.clone(),
                reason: *reason,
            });
        }
        Ok(batch.receipt)
    }

    /// Ingests readings for resolved targets; samples for the same twin travel in one
    /// message. Refused readings are counted and listed; the rest are acknowledged
    /// together by the receipt.
    pub async fn ingest_batch(
        &self,
        readings: impl IntoIterator<Item = (ChannelTarget, Reading)>,
    ) -> Result<BatchReceipt, Error> {
        let receive_time = Timestamp::now();
        let mut groups: Vec<(usize, Vec<Sample>)> = Vec::new();
        let mut rejected = Vec::new();
        let mut accepted = 0;
        for (position, (target, reading)) in readings.into_iter().enumerate() {
            let Some(entry) = self.directory.at(target.twin) else {
                self.kernel.counters.tally(reading.source.0, REFUSED_ONE);
                self.kernel.counters.reject(
                    SampleRejection::UnknownAsset,
                    &format_args!("twin index {}", target.twin),
                );
                rejected.push((position, SampleRejection::UnknownAsset));
                continue;
            };
            let sample = Sample::new(target.channel, reading, receive_time);
            if let Err(reason) = self.check(entry, &sample) {
                self.kernel.counters.tally(reading.source.0, REFUSED_ONE);
                self.kernel.counters.reject(
                    reason,
                    &format_args!(
                        "{} channel {} value {}",
                        entry.path, target.channel.0, sample.value
                    ),
                );
                rejected.push((position, reason));
                continue;
            }
            accepted += 1;
            match groups
                .iter_mut()
                .rev()
                .take(4)
                .find(|(twin, _)| *twin == target.twin)
            {
                Some((_, samples)) => samples.push(sample),
                None => groups.push((target.twin, vec![sample])),
            }
        }
        if groups.len() > 4 {
            groups = merge_groups(groups);
        }
        let (group, receipt) = AckGroup::new(groups.len());
        for (twin, samples) in groups {
            // One message never waits for more permits than exist.
            let most = self
                .kernel
                .settings
                .journal
                .max_in_flight
                .clamp(1, Semaphore::MAX_PERMITS);
            let permits = samples.len().min(most) as u32;
            self.kernel
                .limiter
                .acquire_many(permits)
                .await
                .map_err(|_| Error::ShuttingDown)?
                .forget();
            let entry = &self.directory.entries()[twin];
            let ticket = Ticket::new(
                Some(group.clone()),
                permits,
                Some(self.kernel.limiter.clone()),
                entry.path.clone(),
            );
            // A failed send hands the message back; dropping its ticket reports the
            // twin unavailable through the receipt. A parked twin wakes, and its
            // governors watch the samples before anything else sees them.
            let _ = self.kernel.send(entry, TwinMsg::Samples(samples, ticket));
        }
        Ok(BatchReceipt {
            receipt,
            accepted,
            rejected,
        })
    }

    pub(super) async fn ask<T>(
        &self,
        path: &AssetPath,
        message: impl FnOnce(oneshot::Sender<T>) -> TwinMsg,
    ) -> Result<T, Error> {
        let entry = self.entry(path)?;
        let (reply, wait) = oneshot::channel();
        self.kernel
            .send(entry, message(reply))
            .map_err(|unsent| match unsent.starting {
                true => Error::Starting(path.clone()),
                false => Error::Unavailable(path.clone()),
            })?;
        wait.await.map_err(|_| Error::Unavailable(path.clone()))
    }

    /// Sends a command to its twin; returns the verdict once it is durable.
    pub async fn command(&self, command: Command) -> Result<CommandOutcome, Error> {
        let path = command.asset.clone();
        let caller = tracing::Span::current();
        self.ask(&path, |reply| TwinMsg::Command(command, reply, caller))
            .await?
    }

    /// Asks a twin what would happen under a command, without applying it.
    pub async fn what_if(
        &self,
        command: Command,
        horizon: Duration,
        step: Duration,
    ) -> Result<WhatIf, Error> {
        let path = command.asset.clone();
        self.ask(&path, |reply| {
            TwinMsg::WhatIf(command, horizon, step, reply)
        })
        .await?
    }

    /// Ranks candidate commands for the twin at `path` against the objective and
    /// constraints its type declares (`[types.<type>.recommend]`), with each one's
    /// projection, bounds and the governors' verdicts
    /// ([`recommend`](crate::model::recommend)). `candidates` (command, parameter,
    /// values) replaces the type's grid. Candidates are reviewed as if `origin` sent
    /// them. Changes nothing.
    pub async fn recommend(
        &self,
        path: &AssetPath,
        candidates: Option<(String, String, Vec<f64>)>,
        origin: &Origin,
    ) -> Result<crate::model::recommend::Recommendation, Error> {
        let entry = self
            .directory
            .get(path)
            .ok_or_else(|| Error::UnknownAsset(path.clone()))?;
        let mut spec = entry
            .twin_type
            .recommend
            .clone()
            .ok_or_else(|| Error::InvalidParam {
                command: "recommend".into(),
                param: "objective".into(),
                problem: format!(
                    "twin type `{}` declares no objective ([types.{}.recommend])",
                    entry.twin_type.name, entry.twin_type.name
                ),
            })?;
        if let Some((command, param, values)) = candidates {
            spec.command = command;
            spec.param = param;
            spec.values = values;
        }
        self.ask(path, |reply| {
            TwinMsg::Recommend(Box::new(spec), origin.clone(), reply)
        })
        .await?
    }

    /// Responds to alarm `code` of the twin at `path` on behalf of `origin`
    /// (acknowledge, shelve, …; see [`alarm`](super::alarm)); returns the outcome
    /// once it is durable. Journaled and audited; no governor reviews it.
    pub async fn respond_to_alarm(
        &self,
        path: &AssetPath,
        code: &str,
        response: AlarmResponse,
        origin: Origin,
    ) -> Result<AlarmOutcome, Error> {
        self.ask(path, |reply| {
            TwinMsg::Alarm(code.to_string(), response, origin, reply)
        })
        .await?
    }

    /// Records an operator's `annotation` of an outcome on the twin at `path` on behalf
    /// of `origin` (see [`Annotation`](crate::audit::Annotation)): an audit record of
    /// its own, with the models concerned, returned once durable. It changes nothing
    /// in the twin and passes no governor.
    pub async fn annotate(
        &self,
        path: &AssetPath,
        annotation: crate::audit::Annotation,
        origin: Origin,
    ) -> Result<AuditRecord, Error> {
        let action = match &annotation.subject {
            crate::audit::AnnotationSubject::SafetyAction(seq) => {
                let store = self.kernel.journal.store().clone();
                let seq = *seq;
                tokio::task::spawn_blocking(move || store.audit_record(seq))
                    .await
                    .map_err(|_| Error::ShuttingDown)?
                    .map_err(journal_error)?
            }
            _ => None,
        };
        self.ask(path, |reply| {
            TwinMsg::Annotate(Box::new((annotation, action)), origin, reply)
        })
        .await?
    }

    /// The alarms of every twin at or below `prefix` (all twins without one), by twin
    /// in directory order; a passivated twin's are read without waking it. Twins that
    /// did not answer (starting, restarting) are listed apart.
    pub async fn alarms(&self, prefix: Option<&AssetPath>) -> AlarmList {
        let mut list = AlarmList::default();
        for entry in self.directory.entries() {
            if prefix.is_some_and(|prefix| !entry.path.starts_with(prefix)) {
                continue;
            }
            let alarms = match entry.parked_alarms() {
                Some(alarms) => alarms,
                None => match self.report(&entry.path).await {
                    Ok(report) => report.alarms,
                    Err(_) => {
                        list.unavailable.push(entry.path.clone());
                        continue;
                    }
                },
            };
            list.alarms
                .extend(alarms.into_iter().map(|alarm| (entry.path.clone(), alarm)));
        }
        list
    }

    /// ISA-18.2's rate figures of the twins at or below `prefix` (all without one):
    /// alarm activations in the last 10 minutes, and the alarms that chatter.
    pub fn alarm_rates(&self, prefix: Option<&AssetPath>) -> super::alarm::AlarmRates {
        self.kernel.alarm_log.rates(prefix, Timestamp::now())
    }

    /// Reads a twin's state.
    pub async fn report(&self, path: &AssetPath) -> Result<TwinReport, Error> {
        self.ask(path, TwinMsg::Report).await
    }

    /// Why the twin's active model alarms were raised, by alarm code
    /// ([`ModelOutput::explain`](crate::model::ModelOutput::explain)).
    pub async fn explanations(
        &self,
        path: &AssetPath,
    ) -> Result<Vec<(String, crate::model::Explanation)>, Error> {
        self.ask(path, TwinMsg::Explanations).await
    }

    /// Reads a channel's recent samples in `[from, to]` from the twin's history ring.
    pub async fn history(
        &self,
        path: &AssetPath,
        channel: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Sample>, Error> {
        let target = self.target(path, channel)?;
        self.ask(path, |reply| {
            TwinMsg::History(target.channel, from, to, reply)
        })
        .await
    }

    /// The newest `limit` samples of a channel with a source time in `[from, to]`,
    /// oldest first: the twin's history ring, and before it what the journal still
    /// holds (the journal is truncated once every twin has a snapshot past it).
    pub async fn samples(
        &self,
        path: &AssetPath,
        channel: &str,
        (from, to): (Timestamp, Timestamp),
        limit: usize,
    ) -> Result<Vec<Sample>, Error> {
        let target = self.target(path, channel)?;
        let ring = self
            .history(path, channel, Timestamp(i64::MIN), Timestamp(i64::MAX))
            .await?;
        // A ring that is not full holds every sample since the twin started; a full
        // one, those since its oldest.
        let ring_reaches_back = ring.len() < self.kernel.settings.history_capacity
            || ring
                .first()
                .is_some_and(|oldest| oldest.source_time <= from);
        let mut samples: Vec<Sample> = ring
            .into_iter()
            .filter(|s| s.source_time >= from && s.source_time <= to)
            .collect();
        if samples.len() < limit && !ring_reaches_back {
            let twin = self.entry(path)?.id;
            let kernel = self.kernel.clone();
            let older = tokio::task::spawn_blocking(move || {
                kernel.journal.store().journal_samples(
                    twin,
                    target.channel,
                    (from, to),
                    limit,
                    JOURNAL_HISTORY_BATCHES,
                )
            })
            .await
            .map_err(|_| Error::ShuttingDown)?
            .map_err(journal_error)?;
            samples.extend(older);
            samples.sort_by_key(|s| (s.source_time, s.source, s.epoch, s.seq));
            samples.dedup_by_key(|s| (s.source_time, s.source, s.epoch, s.seq));
        }
        if samples.len() > limit {
            samples.drain(..samples.len() - limit);
        }
        Ok(samples)
    }

    /// A page of audit records at or below `prefix` within `[from, to]`, of the given
    /// `kinds` (every kind when empty), with a sequence number above `after`, oldest
    /// first, at most `limit`. Blocks on the store: call it off the async workers.
    pub fn audit_page(
        &self,
        prefix: &AssetPath,
        range: (Timestamp, Timestamp),
        kinds: &[AuditKind],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        self.kernel
            .journal
            .store()
            .audit_page(prefix, range, kinds, after, limit)
            .map_err(journal_error)
    }

    /// Audit records at or below `prefix` within `[from, to]`, oldest first.
    pub fn audit(
        &self,
        prefix: &AssetPath,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        self.kernel
            .journal
            .store()
            .audit(prefix, from, to, limit)
            .map_err(journal_error)
    }

    /// Subscribes to twin changes. A subscriber that falls more than the buffer behind
    /// gets `Lagged` and skips ahead; it never slows the twins.
    pub fn subscribe(&self) -> Subscription {
        self.kernel
            .change_subscribers
            .fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver: self.kernel.changes.subscribe(),
            count: self.kernel.change_subscribers.clone(),
            watch: None,
        }
    }

    /// Subscribes to twin changes as a watch of the twins at or below `prefix` (every
    /// twin without one): while it lives, those twins are not passivated.
    pub fn watch(&self, prefix: Option<&AssetPath>) -> Subscription {
        let mut subscription = self.subscribe();
        self.kernel.watched.lock().push(prefix.cloned());
        subscription.watch = Some((self.kernel.watched.clone(), prefix.cloned()));
        subscription
    }

    /// Asks every running twin that has been idle for the passivation time to
    /// passivate (see [`passivation`](super::passivation)); returns how many were
    /// asked. Each call is one round: a twin is asked after
    /// [`IDLE_ROUNDS`](super::passivation::IDLE_ROUNDS) rounds without a message.
    pub fn passivate_idle(&self) -> usize {
        let watched = self.kernel.watched.lock().clone();
        if watched.iter().any(Option::is_none) {
            return 0;
        }
        let mut asked = 0;
        for entry in self.directory.entries() {
            if !entry.passivates() || !entry.is_running() {
                continue;
            }
            if watched
                .iter()
                .flatten()
                .any(|prefix| entry.path.starts_with(prefix))
            {
                entry.touch();
                continue;
            }
            if entry.idle_round() >= IDLE_ROUNDS
                && self
                    .kernel
                    .send_if(entry, TwinMsg::Passivate, |_| false)
                    .is_ok()
            {
                asked += 1;
            }
        }
        asked
    }

    /// Runs the passivation sweep, a round every quarter of the idle time, until the
    /// task is aborted; `None` when passivation is off.
    pub fn spawn_passivation_sweep(&self) -> Option<tokio::task::JoinHandle<()>> {
        let idle = self.kernel.settings.passivation.idle()?;
        let round = (idle / IDLE_ROUNDS).max(Duration::from_millis(10));
        let twins = self.clone();
        Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(round);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                twins.passivate_idle();
            }
        }))
    }

    /// Subscribes to actuations: accepted commands (once durable) and safety actions
    /// (at once), as they go to machines.
    pub fn actuations(&self) -> broadcast::Receiver<Actuation> {
        self.kernel.actuations.subscribe()
    }

    /// Reports how an actuation fared at an actuator (a connector, or an embedder's own
    /// machine interface): the twin records it against the desired values that
    /// actuation set, unless a newer actuation has set them since. Journaled, audited
    /// and published; does not wait.
    pub fn report_delivery(&self, report: DeliveryReport) -> Result<(), Error> {
        let entry = self.entry(&report.asset)?;
        let path = report.asset.clone();
        self.kernel
            .send(entry, TwinMsg::Delivery(report))
            .map_err(|_| Error::Unavailable(path))
    }

    /// What an actuator should send again now, for the twins `assets` names (every
    /// hosted twin when `None`): values still pending or failed and not past their
    /// deadline, and delivered values the machine reports back differently. Safety
    /// actions come first. Twins that do not answer are left out.
    pub async fn undelivered(&self, assets: Option<&[AssetPath]>) -> Vec<Actuation> {
        if self.fenced().is_some() {
            return Vec::new();
        }
        let paths: Vec<AssetPath> = match assets {
            Some(assets) => assets.to_vec(),
            None => self.paths().cloned().collect(),
        };
        let mut waits = Vec::with_capacity(paths.len());
        for path in &paths {
            let Ok(entry) = self.entry(path) else {
                continue;
            };
            // A twin passivates only with nothing left to deliver: a parked one is
            // not woken.
            let (reply, wait) = oneshot::channel();
            if self
                .kernel
                .send_if(entry, TwinMsg::Undelivered(reply), |_| false)
                .is_ok()
            {
                waits.push(wait);
            }
        }
        let mut actuations = Vec::new();
        for wait in waits {
            if let Ok(mut found) = wait.await {
                actuations.append(&mut found);
            }
        }
        actuations.sort_by_key(|a| !a.is_safety());
        actuations
    }

    /// Stops this node from actuating its twins, for good while it runs: another node
    /// owns them (an ownership conflict found after a partition healed). Commands are
    /// refused with [`Error::Fenced`], no actuation leaves (safety actions still change
    /// the twins' state), nothing is offered for re-sending, and every twin raises the
    /// critical alarm `fenced` saying why. Returns false when it was fenced already.
    pub fn fence(&self, reason: &str) -> bool {
        if self.kernel.fenced.set(reason.to_string()).is_err() {
            return false;
        }
        tracing::error!(%reason, twins = self.len(), "this node stops actuating its twins; each raises the critical alarm `fenced`");
        for path in self.paths() {
            if let Ok(entry) = self.entry(path) {
                let _ = self.kernel.send(entry, TwinMsg::Fenced);
            }
        }
        true
    }

    /// Why this node stopped actuating its twins, if it did.
    pub fn fenced(&self) -> Option<&str> {
        self.kernel.fenced.get().map(String::as_str)
    }

    /// Subscribes to command verdicts (accepted, clamped, denied), each once durable.
    pub fn verdicts(&self) -> broadcast::Receiver<CommandVerdict> {
        self.kernel.verdicts.subscribe()
    }

    /// Reads the node's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.kernel.counters.snapshot()
    }

    /// Waits until everything handed to the journal so far is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.kernel.journal.flush().await
    }
}

/// The parts of a [`Twins`] handle Doppel's own crates reach into: the shared kernel,
/// the directory of hosted twins, the store, and the replication outbox. Not part of
/// the embedding API; see [`internal`](crate::internal).
pub trait TwinsInternals {
    /// The shared kernel.
    fn kernel(&self) -> &Arc<Kernel>;
    /// The directory of hosted twins.
    fn directory(&self) -> &Arc<Directory>;
    /// Writes every twin's whole state to the replication outbox (mirror baselines,
    /// ordered with each twin's own changes); resolves once all are durable. A node
    /// that replicates does this at start, so mirrors converge even on state written
    /// before replication was enabled.
    fn resync(&self) -> Receipt;
    /// Follows the sequence number of the newest replication outbox entry readable from
    /// the store. It moves just after the entry's batch is acknowledged, once the batch
    /// is in redb; [`Twins::flush`] waits for that.
    fn outbox_head(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The node's redb store (outbox reads and acknowledgements).
    fn store(&self) -> &Store;
}

impl TwinsInternals for Twins {
    fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    fn resync(&self) -> Receipt {
        let entries = self.directory.entries();
        let (group, receipt) = AckGroup::new(entries.len());
        for entry in entries {
            let ticket = Ticket::new(Some(group.clone()), 0, None, entry.path.clone());
            let _ = self.kernel.send(entry, TwinMsg::Resync(ticket));
        }
        receipt
    }

    fn outbox_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.kernel.journal.outbox_head()
    }

    fn store(&self) -> &Store {
        self.kernel.journal.store()
    }
}

/// A subscription to twin changes: a broadcast receiver (through `Deref`) that keeps
/// the kernel's subscriber count while it lives.
pub struct Subscription {
    receiver: broadcast::Receiver<TwinEvent>,
    count: Arc<AtomicUsize>,
    /// The node's watched prefixes and this watch's, for a watch.
    watch: Option<WatchedPrefix>,
}

type WatchedPrefix = (
    Arc<parking_lot::Mutex<Vec<Option<AssetPath>>>>,
    Option<AssetPath>,
);

impl std::ops::Deref for Subscription {
    type Target = broadcast::Receiver<TwinEvent>;
    fn deref(&self) -> &Self::Target {
        &self.receiver
    }
}

impl std::ops::DerefMut for Subscription {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.receiver
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        if let Some((watched, prefix)) = self.watch.take() {
            let mut watched = watched.lock();
            if let Some(at) = watched.iter().position(|p| *p == prefix) {
                watched.swap_remove(at);
            }
        }
    }
}

fn merge_groups(groups: Vec<(usize, Vec<Sample>)>) -> Vec<(usize, Vec<Sample>)> {
    let mut merged: Vec<(usize, Vec<Sample>)> = Vec::with_capacity(groups.len());
    let mut index: HashMap<usize, usize> = HashMap::with_capacity(groups.len());
    for (twin, samples) in groups {
        match index.get(&twin) {
            Some(&at) => merged[at].1.extend(samples),
            None => {
                index.insert(twin, merged.len());
                merged.push((twin, samples));
            }
        }
    }
    merged
}
