//! The twin actor: owns one twin's [`TwinCore`] and hands its effects to the journal.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::alarm::{Alarm, AlarmResponse};
use super::core::{Effects, ModelPlan, PlanOutcome, TwinCore};
use super::directory::TwinEntry;
use super::mailbox::{Supervised, TwinRef};
use super::mirror::MirrorUpdate;
use super::passivation::Parked;
use super::state::{ChannelCondition, DeliveryReport, SampleOutcome, Severity};
use super::twins::Kernel;
use super::{Actuation, CommandVerdict, RunState, TwinChange, TwinEvent, TwinReport, WhatIf};
use crate::audit::{Annotation, AuditRecord};
use crate::command::{Command, CommandId, Origin, Verdict};
use crate::error::Error;
use crate::journal::{Completion, JournalWrite, Ticket};
use crate::model::deploy::ShadowReport;
use crate::path::AssetPath;
use crate::sample::{ChannelId, Sample, SourceId};
use crate::time::Timestamp;
use crate::value::Value;

/// The outcome of a command once durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The governors' verdict.
    pub verdict: Verdict,
    /// Desired values written (empty when denied).
    pub applied: Vec<(String, Value)>,
    /// The twin's version after the command.
    pub version: u64,
    /// Sequence number of its audit record.
    pub audit_seq: Option<u64>,
    /// True when this is the outcome of an earlier command with the same idempotency
    /// key, returned again without applying anything.
    pub replayed: bool,
}

impl CommandOutcome {
    /// The outcome an audit record describes, as a replay.
    fn replay_of(record: &AuditRecord) -> Self {
        let applied = record.verdict.is_applied();
        Self {
            verdict: record.verdict.clone(),
            applied: record.applied.clone(),
            version: record.state_version + u64::from(applied),
            audit_seq: Some(record.seq),
            replayed: true,
        }
    }
}

/// The outcome of a response to an alarm, once durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmOutcome {
    /// The alarm as it is now; `None` when it left the list (back to normal and
    /// acknowledged).
    pub alarm: Option<Alarm>,
    /// The twin's version after the response.
    pub version: u64,
    /// Sequence number of its audit record.
    pub audit_seq: Option<u64>,
}

/// Idempotent commands a twin remembers in memory (older ones are found in the store).
const RECENT_COMMANDS: usize = 32;

/// A twin's status as its supervisor aggregates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinStatus {
    /// Directory index of the twin.
    pub index: usize,
    /// The twin.
    pub asset: AssetPath,
    /// Run state.
    pub run_state: RunState,
    /// Health, 0..=1.
    pub health: f64,
    /// Current throughput, if the type declares a throughput channel.
    pub throughput: Option<f64>,
    /// Current power in kW, if the type declares a power channel.
    pub power_kw: Option<f64>,
    /// Worst active alarm.
    pub worst_alarm: Option<Severity>,
    /// When this status was taken.
    pub at: Timestamp,
}

/// Messages a twin actor handles.
pub enum TwinMsg {
    /// Validated samples for this twin; the ticket completes when they are durable.
    Samples(Vec<Sample>, Ticket),
    /// A command, the reply that comes once its outcome is durable, and the caller's
    /// span, which the command's span is a child of.
    Command(
        Command,
        oneshot::Sender<Result<CommandOutcome, Error>>,
        tracing::Span,
    ),
    /// A what-if question; changes nothing.
    WhatIf(
        Command,
        Duration,
        Duration,
        oneshot::Sender<Result<WhatIf, Error>>,
    ),
    /// Evaluate and rank a recommendation's candidates; changes nothing.
    Recommend(
        Box<crate::model::recommend::RecommendSpec>,
        Origin,
        oneshot::Sender<Result<crate::model::recommend::Recommendation, Error>>,
    ),
    /// Read why its active alarms were raised.
    Explanations(oneshot::Sender<Vec<(String, crate::model::Explanation)>>),
    /// Read the state.
    Report(oneshot::Sender<TwinReport>),
    /// Read a channel's history ring in a time range.
    History(
        ChannelId,
        Timestamp,
        Timestamp,
        oneshot::Sender<Vec<Sample>>,
    ),
    /// Write a snapshot now.
    Snapshot,
    /// Write the whole state to the replication outbox (a mirror baseline); the ticket
    /// completes once it is durable.
    Resync(Ticket),
    /// Send a status update held back by throttling.
    StatusTick,
    /// An actuator's report on an actuation.
    Delivery(DeliveryReport),
    /// A pending value may have reached its deadline or safety bound.
    DeliveryCheck,
    /// What an actuator should send again now.
    Undelivered(oneshot::Sender<Vec<Actuation>>),
    /// The node stopped actuating its twins ([`Twins::fence`](super::Twins::fence)).
    Fenced,
    /// A channel may have gone stale: sweep.
    Freshness,
    /// Channels came under conditions their sources reported; the ticket completes
    /// when they are durable.
    Conditions(Vec<(ChannelId, ChannelCondition)>, Ticket),
    /// The twin has been idle for the node's passivation time: passivate, unless
    /// something waits.
    Passivate,
    /// A response to an alarm (code, response, who), and the reply once durable.
    Alarm(
        String,
        AlarmResponse,
        Origin,
        oneshot::Sender<Result<AlarmOutcome, Error>>,
    ),
    /// An annotation by someone, with the safety action's audit record it names (read
    /// by the caller), and the reply with its audit record once durable.
    Annotate(
        Box<(Annotation, Option<AuditRecord>)>,
        Origin,
        oneshot::Sender<Result<AuditRecord, Error>>,
    ),
    /// Shelvings may have ended: unshelve.
    ShelvingCheck,
    /// Sources lost touch (a connector lost its session or broker), for a reason:
    /// channels they fed go stale.
    SourcesLost(Arc<[SourceId]>, Arc<str>),
    /// Run what the plan says for one model (a deployment or its withdrawal), on
    /// behalf of someone; the reply comes once the change and the twin's snapshot are
    /// durable.
    Models(
        Box<ModelPlan>,
        Origin,
        oneshot::Sender<Result<PlanOutcome, Error>>,
    ),
    /// Read the shadow models' outputs and divergence.
    Shadows(oneshot::Sender<Vec<ShadowReport>>),
}

impl TwinMsg {
    /// True for a request someone waits on an answer to now (a read, a command, a
    /// what-if): a twin that has not started answers it "starting" rather than queue
    /// it. Input (readings, conditions, deliveries) and the node's own messages wait.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            TwinMsg::Command(..)
                | TwinMsg::WhatIf(..)
                | TwinMsg::Recommend(..)
                | TwinMsg::Explanations(_)
                | TwinMsg::Report(_)
                | TwinMsg::History(..)
                | TwinMsg::Alarm(..)
                | TwinMsg::Annotate(..)
                | TwinMsg::Models(..)
                | TwinMsg::Shadows(_)
        )
    }
}

/// How a twin actor gets its initial state.
pub enum TwinStart {
    /// Already recovered (bulk recovery at node start).
    Recovered(Box<TwinCore>),
    /// Recover from the journal as it starts (restart after a crash).
    Recover,
    /// Wake from passivation.
    Parked(Parked),
}

/// Arguments of a twin actor.
pub struct TwinArgs {
    /// The twin's directory entry.
    pub entry: Arc<TwinEntry>,
    /// The node's shared kernel.
    pub kernel: Arc<Kernel>,
    /// Initial state.
    pub start: TwinStart,
    /// Who supervises it: its status updates and its failure go there.
    pub supervisor: Option<Supervised>,
}

/// Why a twin did not start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// The twin actor: one task per running twin, handling the messages of its
/// [`TwinRef`] one at a time.
pub struct TwinActor;

/// A started twin: the handle that reaches it and the task that runs it.
pub struct TwinHandle {
    /// Reaches the twin.
    pub twin: TwinRef,
    /// Ends when the twin stops: stopped, passivated or failed.
    pub task: tokio::task::JoinHandle<()>,
}

/// What handling a message leaves the twin to do.
enum Flow {
    Continue,
    /// It passivated: its task ends.
    Stop,
}

impl TwinActor {
    /// Starts a twin on a task of its own: its state comes as `args.start` says (a
    /// restart recovers it from the journal), its directory entry then reaches it,
    /// and messages queued while it started are handled first. Returns once it runs,
    /// or why it could not start (a panic while starting included).
    pub async fn spawn(args: TwinArgs) -> Result<TwinHandle, StartError> {
        let twin = TwinRef::new();
        let entry = args.entry.clone();
        let (started, on_start) = oneshot::channel::<Result<(), StartError>>();
        let task = {
            let twin = twin.clone();
            tokio::spawn(async move {
                // The state is boxed, and so is what starting holds (freed before the
                // twin idles): the task itself stays small.
                match Box::pin(TwinActorState::start(args, twin.clone())).await {
                    Ok(state) => {
                        let _ = started.send(Ok(()));
                        state.run().await;
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })
        };
        let outcome = match on_start.await {
            Ok(Ok(())) => return Ok(TwinHandle { twin, task }),
            Ok(Err(error)) => error,
            // The task ended without a word: it panicked while starting.
            Err(_) => match task.await {
                Err(error) if error.is_panic() => format!(
                    "the twin panicked while starting: {}",
                    panic_reason(error.into_panic().as_ref())
                )
                .into(),
                _ => "the twin's task ended while starting".into(),
            },
        };
        twin.stop();
        entry.clear_actor_if(&twin);
        Err(outcome)
    }
}

/// A panic's message.
fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The twin actor's state.
pub struct TwinActorState {
    core: TwinCore,
    entry: Arc<TwinEntry>,
    kernel: Arc<Kernel>,
    fx: Effects,
    supervisor: Option<Supervised>,
    last_status: Option<TwinStatus>,
    tick_pending: bool,
    myself: TwinRef,
    /// Outcomes of recent idempotent commands, newest last, with their audit sequence
    /// number once durable.
    recent: VecDeque<(CommandId, CommandOutcome, Arc<OnceLock<u64>>)>,
    /// Derived values and confidences as last written to the replication outbox.
    mirrored_derived: Vec<(Option<f64>, f64)>,
    /// The next outbox update carries the whole state.
    baseline: bool,
    /// The next journal write holds an idempotent command: index its audit record.
    index_command: bool,
    /// When the scheduled delivery check runs, if one is scheduled.
    delivery_check: Option<Timestamp>,
    /// When the scheduled shelving check runs, if one is scheduled.
    shelving_check: Option<Timestamp>,
    /// Messages handled that were sent through the twin's directory entry (all but
    /// the actor's own timers).
    handled: u64,
}

/// Minimum spacing of status updates that only carry new throughput or power figures.
const STATUS_INTERVAL_US: i64 = 250_000;

impl TwinActorState {
    /// The twin's state as it starts: recovered, parked or given, then reachable
    /// through its entry, its conditions swept and its status reported.
    async fn start(args: TwinArgs, myself: TwinRef) -> Result<Box<Self>, StartError> {
        let restarted = matches!(args.start, TwinStart::Recover);
        let mut snapshot_due = false;
        let mut core = match args.start {
            TwinStart::Recovered(core) => *core,
            TwinStart::Recover => {
                args.kernel.journal.flush().await?;
                let kernel = args.kernel.clone();
                let entry = args.entry.clone();
                tokio::task::spawn_blocking(move || kernel.recover_one(&entry)).await??
            }
            TwinStart::Parked(parked) => {
                snapshot_due = parked.snapshot_due;
                args.kernel.unpark(&args.entry, parked)?
            }
        };
        // Alarms rebuilt by recovery were announced in their time, not now.
        let _ = core.take_activations();
        args.entry.set_running(myself.clone());
        if restarted {
            tracing::info!(asset = %args.entry.path, version = core.state().version, "twin restarted from durable state");
            let _ = args.kernel.changes.send(TwinEvent {
                asset: args.entry.path.clone(),
                version: core.state().version,
                change: TwinChange::Restarted,
            });
        }
        let mut state = Box::new(TwinActorState {
            core,
            entry: args.entry,
            kernel: args.kernel,
            fx: Effects::default(),
            supervisor: args.supervisor,
            last_status: None,
            tick_pending: false,
            myself,
            recent: VecDeque::new(),
            mirrored_derived: Vec::new(),
            baseline: false,
            index_command: false,
            delivery_check: None,
            shelving_check: None,
            handled: 0,
        });
        if snapshot_due {
            // The store's first record of this twin anchors its schema: a snapshot
            // before any event.
            state.flush_effects(Ticket::none(), Completion::None, true);
        }
        // Values recovered from before a restart may have aged past their channels'
        // maximum: they are stale before anything else happens.
        state.fx.collect_changes = state.collects_changes();
        state.sweep();
        if state.fx.events > 0 {
            state.count_conditions();
            state.flush_effects(Ticket::none(), Completion::None, false);
        }
        state.end_shelvings();
        state.report_status(true);
        state.schedule_delivery_check();
        Ok(state)
    }

    /// Handles the twin's messages until it stops, passivates or a message panics;
    /// a panic is its supervisor's to answer.
    async fn run(mut self: Box<Self>) {
        let twin = self.myself.clone();
        while let Some(batch) = twin.next_batch().await {
            for message in batch {
                // A stop takes effect after the message being handled.
                if !twin.is_open() {
                    break;
                }
                let handled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(message)));
                match handled {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => {
                        twin.stop();
                        return;
                    }
                    Err(panic) => {
                        let reason = panic_reason(panic.as_ref());
                        twin.stop();
                        self.entry.clear_actor_if(&twin);
                        if let Some(supervised) = &self.supervisor {
                            supervised.supervisor.failed(supervised.slot, twin, reason);
                        } else {
                            tracing::error!(asset = %self.entry.path, %reason, "twin failed, and nothing supervises it");
                        }
                        return;
                    }
                }
            }
        }
        self.entry.clear_actor_if(&twin);
    }

    fn handle(&mut self, message: TwinMsg) -> Flow {
        let state = self;
        match &message {
            TwinMsg::StatusTick | TwinMsg::DeliveryCheck | TwinMsg::ShelvingCheck => {}
            TwinMsg::Passivate | TwinMsg::Snapshot | TwinMsg::Freshness => state.handled += 1,
            _ => {
                state.handled += 1;
                state.entry.touch();
            }
        }
        match message {
            TwinMsg::Passivate => {
                if state.passivate() {
                    return Flow::Stop;
                }
            }
            TwinMsg::Samples(samples, ticket) => state.on_samples(&samples, ticket),
            TwinMsg::Command(command, reply, caller) => state.on_command(command, reply, &caller),
            TwinMsg::WhatIf(command, horizon, step, reply) => {
                let _ = reply.send(
                    state
                        .core
                        .what_if(&command, horizon, step, Timestamp::now()),
                );
            }
            TwinMsg::Recommend(spec, origin, reply) => {
                let _ = reply.send(state.core.recommend(&spec, &origin, Timestamp::now()));
            }
            TwinMsg::Report(reply) => {
                let _ = reply.send(state.core.report());
            }
            TwinMsg::Explanations(reply) => {
                let _ = reply.send(state.core.explanations());
            }
            TwinMsg::History(channel, from, to, reply) => {
                let _ = reply.send(state.core.history(channel, from, to));
            }
            TwinMsg::Snapshot => state.flush_effects(Ticket::none(), Completion::None, true),
            TwinMsg::Resync(ticket) => {
                state.baseline = true;
                state.flush_effects(ticket, Completion::None, false);
            }
            TwinMsg::StatusTick => {
                state.tick_pending = false;
                state.report_status(true);
            }
            TwinMsg::Delivery(report) => state.on_delivery(&report),
            TwinMsg::DeliveryCheck => {
                state.delivery_check = None;
                state.fx.collect_changes = state.collects_changes();
                let bound = state.kernel.settings.delivery.safety_bound();
                state
                    .core
                    .expire_deliveries(Timestamp::now(), bound, &mut state.fx);
                state.flush_effects(Ticket::none(), Completion::None, false);
                state.report_status(false);
                state.schedule_delivery_check();
            }
            TwinMsg::Undelivered(reply) => {
                let _ = reply.send(state.core.undelivered(Timestamp::now()));
            }
            TwinMsg::Fenced => state.on_fenced(),
            TwinMsg::Alarm(code, response, origin, reply) => {
                state.on_alarm(&code, response, &origin, reply);
            }
            TwinMsg::Annotate(annotation, origin, reply) => {
                let (annotation, action) = *annotation;
                state.on_annotate(&annotation, action.as_ref(), &origin, reply);
            }
            TwinMsg::ShelvingCheck => {
                state.shelving_check = None;
                state.end_shelvings();
            }
            TwinMsg::Models(plan, origin, reply) => state.on_models(*plan, &origin, reply),
            TwinMsg::Shadows(reply) => {
                let _ = reply.send(state.core.shadows());
            }
            TwinMsg::Freshness => {
                state.fx.collect_changes = state.collects_changes();
                state.sweep();
                if state.fx.events > 0 {
                    state.count_conditions();
                    state.flush_effects(Ticket::none(), Completion::None, false);
                    state.report_status(false);
                }
            }
            TwinMsg::Conditions(conditions, ticket) => {
                state.fx.collect_changes = state.collects_changes();
                let now = Timestamp::now();
                for (channel, condition) in conditions {
                    state.core.mark(channel, condition, now, &mut state.fx);
                }
                state.count_conditions();
                state.flush_effects(ticket, Completion::None, false);
                state.report_status(false);
            }
            TwinMsg::SourcesLost(sources, reason) => {
                state.fx.collect_changes = state.collects_changes();
                state
                    .core
                    .sources_lost(&sources, &reason, Timestamp::now(), &mut state.fx);
                state.count_conditions();
                state.flush_effects(Ticket::none(), Completion::None, false);
                state.report_status(false);
            }
        }
        Flow::Continue
    }

    /// Parks the twin if nothing of it waits (a delivery, a timer, a message in its
    /// mailbox): its snapshot goes to the journal when the last one is behind, and the
    /// same bytes to its directory entry. Returns true when the actor must stop.
    fn passivate(&mut self) -> bool {
        if self.tick_pending
            || self.delivery_check.is_some()
            || self.shelving_check.is_some()
            || !self.core.undelivered(Timestamp::now()).is_empty()
        {
            return false;
        }
        let behind = self.core.events_since_snapshot() > 0;
        let bytes = match self.core.snapshot() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(asset = %self.entry.path, %error, "the twin's snapshot does not encode; it stays awake");
                return false;
            }
        };
        if behind {
            self.kernel.journal.write(JournalWrite::snapshot(
                self.entry.id,
                self.entry.path.clone(),
                bytes.clone(),
            ));
        }
        let core = &self.core;
        let parked = self
            .entry
            .park_if_drained(&self.myself, self.handled, || Parked::new(bytes, core));
        if parked {
            self.kernel
                .counters
                .passivated
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(asset = %self.entry.path, "twin passivated");
        }
        parked
    }

    fn on_alarm(
        &mut self,
        code: &str,
        response: AlarmResponse,
        origin: &Origin,
        reply: oneshot::Sender<Result<AlarmOutcome, Error>>,
    ) {
        let _span = tracing::info_span!("alarm", asset = %self.entry.path, alarm = code, response = response.name(), origin = %origin.principal).entered();
        self.fx.collect_changes = self.collects_changes();
        let alarm = match self
            .core
            .respond_to_alarm(code, response, origin, &mut self.fx)
        {
            Ok(alarm) => alarm,
            Err(error) => {
                tracing::info!(%error, "alarm response refused");
                let _ = reply.send(Err(error));
                return;
            }
        };
        tracing::info!(
            state = alarm.as_ref().map_or("normal", Alarm::state_name),
            "alarm response applied"
        );
        let version = self.core.state().version;
        let completion = Completion::Reply(Box::new(move |result| {
            let _ = reply.send(result.map(|audit_seqs| AlarmOutcome {
                alarm,
                version,
                audit_seq: audit_seqs.first().copied(),
            }));
        }));
        let snapshot_due =
            self.core.events_since_snapshot() >= self.kernel.settings.journal.snapshot_every;
        // Someone waits for the answer: its batch commits now.
        self.fx.urgent = true;
        self.flush_effects(Ticket::none(), completion, snapshot_due);
        self.report_status(false);
        self.schedule_shelving_check();
    }

    fn on_annotate(
        &mut self,
        annotation: &Annotation,
        action: Option<&AuditRecord>,
        origin: &Origin,
        reply: oneshot::Sender<Result<AuditRecord, Error>>,
    ) {
        let _span = tracing::info_span!("annotate", asset = %self.entry.path, subject = %annotation.command(), outcome = annotation.outcome.word(), origin = %origin.principal).entered();
        let record = match (self.core).annotate(
            annotation,
            action,
            origin,
            Timestamp::now(),
            &mut self.fx,
        ) {
            Ok(record) => record,
            Err(error) => {
                tracing::info!(%error, "annotation refused");
                let _ = reply.send(Err(error));
                return;
            }
        };
        tracing::info!("annotated");
        let completion = Completion::Reply(Box::new(move |result| {
            let _ = reply.send(result.map(|seqs| AuditRecord {
                seq: seqs.first().copied().unwrap_or(0),
                ..record
            }));
        }));
        self.fx.urgent = true;
        self.flush_effects(Ticket::none(), completion, false);
    }

    fn on_models(
        &mut self,
        plan: ModelPlan,
        origin: &Origin,
        reply: oneshot::Sender<Result<PlanOutcome, Error>>,
    ) {
        let _span =
            tracing::info_span!("models", asset = %self.entry.path, origin = %origin.principal)
                .entered();
        self.fx.collect_changes = self.collects_changes();
        let outcome = match self
            .core
            .apply_plan(plan, origin, Timestamp::now(), &mut self.fx)
        {
            Ok(outcome) if outcome.changed() => outcome,
            other => {
                let _ = reply.send(other);
                return;
            }
        };
        tracing::info!(
            swapped = outcome.swapped.is_some(),
            shadow_started = outcome.shadow_started.is_some(),
            shadow_ended = outcome.shadow_ended.is_some(),
            "models changed"
        );
        let completion = Completion::Reply(Box::new(move |result| {
            let _ = reply.send(result.map(|_| outcome));
        }));
        // The models' state goes into the same batch as the audit records, so a
        // restart finds the twin as it runs now.
        self.fx.urgent = true;
        self.flush_effects(Ticket::none(), completion, true);
        self.report_status(false);
    }

    /// Unshelves alarms whose shelving ended, and schedules the next check.
    fn end_shelvings(&mut self) {
        self.fx.collect_changes = self.collects_changes();
        if self.core.end_shelvings(Timestamp::now(), &mut self.fx) > 0 {
            self.flush_effects(Ticket::none(), Completion::None, false);
            self.report_status(false);
        }
        self.schedule_shelving_check();
    }

    /// Schedules a shelving check for the earliest end of a shelving, unless one is
    /// due sooner already.
    fn schedule_shelving_check(&mut self) {
        let Some(at) = self.core.next_shelving_end() else {
            return;
        };
        if self.shelving_check.is_some_and(|scheduled| scheduled <= at) {
            return;
        }
        self.shelving_check = Some(at);
        self.cast_after(at, TwinMsg::ShelvingCheck);
    }

    /// Casts `message` (one of the actor's own timers) to this actor a millisecond
    /// past `at`, so the check it asks for finds the instant passed.
    fn cast_after(&self, at: Timestamp, message: TwinMsg) {
        let myself = self.myself.clone();
        let wait = Duration::from_micros(at.0.saturating_sub(Timestamp::now().0).max(0) as u64);
        tokio::spawn(async move {
            tokio::time::sleep(wait + Duration::from_millis(1)).await;
            let _ = myself.cast(message);
        });
    }

    fn collects_changes(&self) -> bool {
        self.kernel.settings.replicate || self.kernel.change_subscribers.load(Ordering::Relaxed) > 0
    }

    fn on_fenced(&mut self) {
        let Some(reason) = self.kernel.fenced.get() else {
            return;
        };
        self.fx.collect_changes = self.collects_changes();
        if self.core.raise_system_alarm(
            "fenced",
            &format!("this node no longer actuates the machine: {reason}"),
            Timestamp::now(),
            &mut self.fx,
        ) {
            self.flush_effects(Ticket::none(), Completion::None, false);
            self.report_status(true);
        }
    }

    fn on_delivery(&mut self, report: &DeliveryReport) {
        let _span = tracing::info_span!("delivery", asset = %self.entry.path, version = report.version, by = %report.by).entered();
        self.fx.collect_changes = self.collects_changes();
        if self.core.apply_delivery(report, &mut self.fx) {
            tracing::debug!(outcome = ?report.outcome, desired = ?report.desired, "delivery recorded");
            self.flush_effects(Ticket::none(), Completion::None, false);
            self.report_status(false);
        }
    }

    /// Schedules a delivery check for the earliest pending deadline or safety bound,
    /// unless one is due sooner already.
    fn schedule_delivery_check(&mut self) {
        let Some(at) = self
            .core
            .next_delivery_check(self.kernel.settings.delivery.safety_bound())
        else {
            return;
        };
        if self.delivery_check.is_some_and(|scheduled| scheduled <= at) {
            return;
        }
        self.delivery_check = Some(at);
        self.cast_after(at, TwinMsg::DeliveryCheck);
    }

    /// Marks channels past their maximum age stale and tells the node's sweep when to
    /// look next.
    fn sweep(&mut self) {
        let next = self.core.sweep(
            Timestamp::now(),
            self.kernel.settings.max_age(),
            &mut self.fx,
        );
        self.entry.set_stale_at(next);
    }

    fn count_conditions(&mut self) {
        if self.fx.conditions > 0 {
            self.kernel.counters.conditions.fetch_add(
                u64::from(std::mem::take(&mut self.fx.conditions)),
                Ordering::Relaxed,
            );
        }
    }

    fn on_samples(&mut self, samples: &[Sample], ticket: Ticket) {
        self.fx.collect_changes = self.collects_changes();
        let mut first_duplicate = None;
        for sample in samples {
            let outcome = self.core.apply_sample(sample, &mut self.fx);
            if outcome == SampleOutcome::Duplicate && first_duplicate.is_none() {
                first_duplicate = Some(*sample);
            }
        }
        let counters = &self.kernel.counters;
        counters
            .samples_in
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        counters
            .samples_applied
            .fetch_add(u64::from(self.fx.applied), Ordering::Relaxed);
        if self.fx.late > 0 {
            counters
                .samples_late
                .fetch_add(u64::from(self.fx.late), Ordering::Relaxed);
        }
        if let Some(sample) = first_duplicate {
            counters.duplicates(
                u64::from(self.fx.duplicates),
                &SampleLabel(&self.entry, &sample),
            );
        }
        for (sample, reason) in self.fx.refused.drain(..) {
            counters.reject(reason, &SampleLabel(&self.entry, &sample));
        }
        for (source, counts) in self.fx.by_source.drain(..) {
            counters.tally(source.0, counts);
        }
        if self.core.freshness_changed() {
            self.sweep();
        }
        self.count_conditions();
        self.fx.applied = 0;
        self.fx.late = 0;
        self.fx.duplicates = 0;
        let snapshot_due =
            self.core.events_since_snapshot() >= self.kernel.settings.journal.snapshot_every;
        self.flush_effects(ticket, Completion::None, snapshot_due);
        self.report_status(false);
    }

    fn on_command(
        &mut self,
        command: Command,
        reply: oneshot::Sender<Result<CommandOutcome, Error>>,
        caller: &tracing::Span,
    ) {
        // A child of the caller's span (an RPC, a connector), so a trace follows the
        // command across the mailbox.
        let span = tracing::info_span!(parent: caller, "command", asset = %self.entry.path, command_id = %command.id, command = %command.name, origin = %command.origin.principal);
        let _entered = span.enter();
        if let Some(reason) = self.kernel.fenced.get() {
            tracing::warn!(%reason, "command refused: this node no longer actuates the twin");
            let _ = reply.send(Err(Error::Fenced {
                asset: self.entry.path.clone(),
                reason: reason.clone(),
            }));
            return;
        }
        let reply = if command.idempotent {
            match self.replay(&command, reply) {
                Some(reply) => reply,
                None => return,
            }
        } else {
            reply
        };
        self.fx.collect_changes = self.collects_changes();
        let now = Timestamp::now();
        let (verdict, applied) = match self.core.command(&command, now, &mut self.fx) {
            Ok(outcome) => outcome,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let counters = &self.kernel.counters;
        match &verdict {
            Verdict::Accepted => counters.commands_accepted.fetch_add(1, Ordering::Relaxed),
            Verdict::Clamped { .. } => counters.commands_clamped.fetch_add(1, Ordering::Relaxed),
            Verdict::Denied { .. } => counters.commands_denied.fetch_add(1, Ordering::Relaxed),
        };
        tracing::info!(verdict = %verdict, "command reviewed");
        let version = self.core.state().version;
        let actuation = verdict.is_applied().then(|| {
            Actuation::command_applied(
                self.entry.path.clone(),
                version,
                &command,
                applied.clone(),
                now,
            )
        });
        let audit_slot = Arc::new(OnceLock::new());
        if command.idempotent {
            if self.recent.len() == RECENT_COMMANDS {
                self.recent.pop_front();
            }
            self.recent.push_back((
                command.id.clone(),
                CommandOutcome {
                    verdict: verdict.clone(),
                    applied: applied.clone(),
                    version,
                    audit_seq: None,
                    replayed: true,
                },
                audit_slot.clone(),
            ));
        }
        let actuated = actuation.is_some();
        let kernel = self.kernel.clone();
        let verdicts = self.kernel.verdicts.clone();
        let published = CommandVerdict {
            asset: self.entry.path.clone(),
            command_id: command.id.clone(),
            command: command.name.clone(),
            origin: command.origin.clone(),
            verdict: verdict.clone(),
            applied: applied.clone(),
            version,
            at: now,
        };
        // Open from the decision until its audit record is durable.
        let audit_span = tracing::info_span!("audit", audit_seq = tracing::field::Empty);
        let completion = Completion::Reply(Box::new(move |result| match result {
            Ok(audit_seqs) => {
                if let Some(seq) = audit_seqs.first() {
                    audit_span.record("audit_seq", seq);
                    let _ = audit_slot.set(*seq);
                }
                drop(audit_span);
                if let Some(actuation) = actuation {
                    if kernel.fenced.get().is_none() {
                        let _ = kernel.actuations.send(actuation);
                    } else {
                        tracing::error!(
                            "actuation held back: this node no longer actuates the twin"
                        );
                    }
                }
                let _ = verdicts.send(published);
                let _ = reply.send(Ok(CommandOutcome {
                    verdict,
                    applied,
                    version,
                    audit_seq: audit_seqs.first().copied(),
                    replayed: false,
                }));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }));
        let snapshot_due =
            self.core.events_since_snapshot() >= self.kernel.settings.journal.snapshot_every;
        // Someone waits for the verdict: its batch commits now, not at the interval.
        self.fx.urgent = true;
        self.index_command = command.idempotent;
        self.flush_effects(Ticket::none(), completion, snapshot_due);
        self.report_status(false);
        if actuated {
            self.schedule_delivery_check();
        }
    }

    /// Answers a command whose idempotency key the twin has seen with the first
    /// outcome, applying nothing; hands `reply` back when the key is new.
    fn replay(
        &mut self,
        command: &Command,
        reply: oneshot::Sender<Result<CommandOutcome, Error>>,
    ) -> Option<oneshot::Sender<Result<CommandOutcome, Error>>> {
        if let Some((_, outcome, audit_seq)) =
            self.recent.iter().find(|(id, _, _)| *id == command.id)
        {
            tracing::info!("idempotent retry: first outcome returned");
            // Answered once the journal has committed what precedes it, the first
            // command included: a replay never reports what is not yet on disk.
            let mut outcome = outcome.clone();
            let audit_seq = audit_seq.clone();
            let completion = Completion::Reply(Box::new(move |result| {
                outcome.audit_seq = audit_seq.get().copied();
                let _ = reply.send(result.map(|_| outcome));
            }));
            self.flush_effects(Ticket::none(), completion, false);
            return None;
        }
        match self
            .kernel
            .journal
            .store()
            .command_record(&self.entry.path, &command.id.0)
        {
            Ok(None) => Some(reply),
            Ok(Some(record)) => {
                tracing::info!("idempotent retry: outcome read from the audit log");
                let _ = reply.send(Ok(CommandOutcome::replay_of(&record)));
                None
            }
            Err(error) => {
                let _ = reply.send(Err(Error::Journal(error)));
                None
            }
        }
    }

    /// Publishes what the last message produced and hands its journal write over.
    fn flush_effects(&mut self, ticket: Ticket, completion: Completion, snapshot: bool) {
        let activations = self.core.take_activations();
        if !activations.is_empty() {
            let now = Timestamp::now();
            for code in activations {
                self.kernel.alarm_log.record(&self.entry.path, code, now);
            }
        }
        let safety = !self.fx.safety_actuations.is_empty();
        for actuation in self.fx.safety_actuations.drain(..) {
            self.kernel
                .counters
                .safety_actions
                .fetch_add(1, Ordering::Relaxed);
            match self.kernel.fenced.get() {
                None => {
                    let _ = self.kernel.actuations.send(actuation);
                }
                Some(reason) => {
                    tracing::error!(asset = %actuation.asset(), command = actuation.command(), %reason, "safety action held back: this node no longer actuates the twin; the owner's twin governs the machine");
                }
            }
        }
        if safety {
            self.schedule_delivery_check();
        }
        let mirror = self.mirror_update();
        for change in self.fx.changes.drain(..) {
            let _ = self.kernel.changes.send(change);
        }
        let snapshot = if snapshot {
            match self.core.snapshot() {
                Ok(bytes) => Some((self.entry.path.clone(), bytes)),
                Err(error) => {
                    tracing::error!(%error, "the twin's snapshot does not encode; the journal keeps its events");
                    None
                }
            }
        } else {
            None
        };
        let write = JournalWrite {
            twin: self.entry.id,
            records: std::mem::take(&mut self.fx.records),
            events: std::mem::take(&mut self.fx.events),
            audit: std::mem::take(&mut self.fx.audit),
            snapshot,
            ticket,
            completion,
            urgent: std::mem::take(&mut self.fx.urgent),
            mirror,
            index_commands: std::mem::take(&mut self.index_command),
        };
        self.kernel.journal.write(write);
    }

    /// What the last message changed, for the replication outbox (replicating nodes
    /// only): the whole state when a baseline is due, else the changes and the derived
    /// values that moved.
    fn mirror_update(&mut self) -> Option<Box<MirrorUpdate>> {
        if !self.kernel.settings.replicate {
            return None;
        }
        let state = self.core.state();
        let derived_moved = self.mirrored_derived.len() != state.derived.len()
            || self
                .mirrored_derived
                .iter()
                .zip(&state.derived)
                .any(|(sent, now)| !same(*sent, (now.value, now.confidence)));
        if std::mem::take(&mut self.baseline) {
            self.mirrored_derived = state
                .derived
                .iter()
                .map(|d| (d.value, d.confidence))
                .collect();
            return Some(Box::new(MirrorUpdate::baseline(self.core.report())));
        }
        if self.fx.events == 0 && self.fx.audit.is_empty() && !derived_moved {
            return None;
        }
        let derived = if derived_moved {
            self.mirrored_derived
                .resize(state.derived.len(), (None, 0.0));
            let mut moved = Vec::new();
            for (sent, now) in self.mirrored_derived.iter_mut().zip(&state.derived) {
                if !same(*sent, (now.value, now.confidence)) {
                    *sent = (now.value, now.confidence);
                    moved.push(now.clone());
                }
            }
            moved
        } else {
            Vec::new()
        };
        Some(Box::new(MirrorUpdate {
            asset: self.entry.path.clone(),
            version: state.version,
            at: state.updated_at,
            run_state: self.core.run_state(),
            health: state.health,
            full: None,
            changes: self.fx.changes.iter().map(|e| e.change.clone()).collect(),
            derived,
            audit: Vec::new(),
        }))
    }

    fn report_status(&mut self, force: bool) {
        let Some(supervised) = &self.supervisor else {
            return;
        };
        let state = self.core.state();
        let twin_type = self.core.twin_type();
        let status = TwinStatus {
            index: self.entry.index,
            asset: self.entry.path.clone(),
            run_state: self.core.run_state(),
            health: (state.health * 100.0).round() / 100.0,
            throughput: twin_type.aggregates.throughput.and_then(|c| state.value(c)),
            power_kw: twin_type.aggregates.power.and_then(|c| state.value(c)),
            worst_alarm: state.worst_severity(),
            at: state.updated_at,
        };
        let (due, changed) = match &self.last_status {
            None => (true, true),
            Some(last) => {
                let urgent = force
                    || last.run_state != status.run_state
                    || last.health != status.health
                    || last.worst_alarm != status.worst_alarm;
                let changed = urgent
                    || last.throughput != status.throughput
                    || last.power_kw != status.power_kw;
                let spaced =
                    (status.at.0 - last.at.0 >= STATUS_INTERVAL_US) || status.at.0 < last.at.0;
                (urgent || (changed && spaced), changed)
            }
        };
        if due {
            supervised
                .supervisor
                .status(supervised.slot, status.clone());
            self.last_status = Some(status);
        } else if changed && !self.tick_pending {
            // Hold the figures back, but deliver them once the interval has passed.
            self.tick_pending = true;
            let myself = self.myself.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(STATUS_INTERVAL_US as u64)).await;
                let _ = myself.cast(TwinMsg::StatusTick);
            });
        }
    }
}

/// A sample as a log line names it: twin, channel, source, epoch, sequence number.
struct SampleLabel<'a>(&'a TwinEntry, &'a Sample);

impl std::fmt::Display for SampleLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let SampleLabel(entry, sample) = self;
        let channel = entry
            .twin_type
            .channel_spec(sample.channel)
            .map_or("?", |spec| spec.name.as_str());
        write!(
            f,
            "{} channel {channel} value {} source {} epoch {} seq {}",
            entry.path, sample.value, sample.source.0, sample.epoch, sample.seq
        )
    }
}

/// The same derived value and confidence, bit for bit (NaN never reaches them).
fn same(a: (Option<f64>, f64), b: (Option<f64>, f64)) -> bool {
    a.1.to_bits() == b.1.to_bits() && a.0.map(f64::to_bits) == b.0.map(f64::to_bits)
}
