//! A deterministic physics simulator for the `doppel dev` plant.
//!
//! It knows the two twin types of `types.toml` (`press` and `pump`) and nothing of the
//! runtime: it advances each machine's physics and emits one reading per channel per
//! machine, and it hears back the desired values the twins settle on (a trip's `stop`,
//! an operator's `set_speed`). Everything runs in simulated time, `speed` times faster
//! than the real time the caller steps it by. The twin types' model parameters assume
//! about ten steps per real second and speeds from 1 to about 600.
//!
//! Signals carry bounded, Gaussian-like sensor noise, slow sensor drift, duty cycles
//! (a press pauses for coil changes, a pump follows a varying process demand) and a
//! first-order thermal response. Two faults are injected 90 simulated seconds in:
//! bearing wear on one press of the first line and a coolant loss on one machine of the
//! second line (see [`Simulator::faults`]).

use std::f64::consts::TAU;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// When the injected faults begin, in simulated seconds (1.5 real seconds at speed 60).
const FAULT_ONSET_SIM_SECS: f64 = 90.0;
/// Mean ambient temperature, degC; the thermal models assume it too.
const AMBIENT_DEG_C: f64 = 25.0;
/// Longest physics sub-step, in simulated seconds: duty cycles stay resolved when one
/// call covers minutes of simulated time.
const MAX_SUBSTEP_SIM_SECS: f64 = 10.0;
/// Upper bound on sub-steps per call, so one absurd `dt` cannot stall the caller.
const MAX_SUBSTEPS: usize = 10_000;
/// Slowest sensor drift, time constant in simulated seconds.
const DRIFT_TAU_SIM_SECS: f64 = 3600.0;
/// Highest speed a drive can physically turn, rpm.
const MAX_DRIVE_RPM: f64 = 3000.0;
/// Vibration velocity at which a worn bearing is considered failed, mm/s.
const BEARING_DAMAGE_MM_S: f64 = 11.0;
/// Temperature at which the twins trip a machine, degC.
const TRIP_DEG_C: f64 = 95.0;

/// One sensor of a machine: channel name, declared range (the sensor's span: readings
/// saturate at its ends) and its noise and drift, absolute plus relative to the value.
struct Sensor {
    channel: &'static str,
    range: (f64, f64),
    noise_abs: f64,
    noise_rel: f64,
    drift_abs: f64,
    drift_rel: f64,
}

const fn sensor(
    channel: &'static str,
    range: (f64, f64),
    noise: (f64, f64),
    drift: (f64, f64),
) -> Sensor {
    Sensor {
        channel,
        range,
        noise_abs: noise.0,
        noise_rel: noise.1,
        drift_abs: drift.0,
        drift_rel: drift.1,
    }
}

/// Press sensors, in emission order; names and ranges as declared in `types.toml`.
const PRESS_SENSORS: [Sensor; 5] = [
    sensor("temperature", (-20.0, 200.0), (0.15, 0.0), (0.15, 0.0)),
    sensor("vibration", (0.0, 50.0), (0.02, 0.02), (0.0, 0.01)),
    sensor("speed", (0.0, 3200.0), (0.0, 0.001), (0.0, 0.0)),
    sensor("power_kw", (0.0, 150.0), (0.1, 0.01), (0.0, 0.005)),
    sensor("throughput", (0.0, 120.0), (0.0, 0.01), (0.0, 0.0)),
];

/// Pump sensors, in emission order; names and ranges as declared in `types.toml`.
const PUMP_SENSORS: [Sensor; 6] = [
    sensor("flow", (0.0, 400.0), (0.3, 0.008), (0.0, 0.005)),
    sensor("pressure", (0.0, 30.0), (0.02, 0.005), (0.02, 0.0)),
    sensor("temperature", (-20.0, 200.0), (0.15, 0.0), (0.15, 0.0)),
    sensor("temperature_b", (-20.0, 200.0), (0.15, 0.0), (0.15, 0.0)),
    sensor("vibration", (0.0, 50.0), (0.02, 0.02), (0.0, 0.01)),
    sensor("power_kw", (0.0, 300.0), (0.1, 0.01), (0.0, 0.005)),
];

/// Press physics: a 1200 rpm flywheel motor, one part per stroke, 40 motor revolutions
/// per stroke, so 30 parts/min at nominal speed.
mod press {
    pub const NOMINAL_RPM: f64 = 1200.0;
    pub const REVS_PER_STROKE: f64 = 40.0;
    /// Thermal gain, degC per rpm (as the `thermal` model in `types.toml`).
    pub const THERMAL_GAIN: f64 = 0.025;
    /// Thermal time constant, simulated seconds (`TAU_PRESS_SIM_SECS` in `config.rs`).
    pub const TAU_SECS: f64 = 300.0;
    /// Share of a coil-change cycle spent pressing.
    pub const PRESSING_SHARE: f64 = 0.9;
    /// Controls and hydraulics power while stopped, kW.
    pub const STANDBY_KW: f64 = 0.4;
}

/// Pump physics: a centrifugal pump with affinity-law scaling around 1480 rpm.
mod pump {
    pub const NOMINAL_RPM: f64 = 1480.0;
    pub const NOMINAL_FLOW_SETPOINT: f64 = 150.0;
    pub const MAX_FLOW_SETPOINT: f64 = 300.0;
    /// Best-efficiency flow at nominal speed, m3/h.
    pub const BEP_FLOW: f64 = 160.0;
    /// Flow the pump can deliver at nominal speed against the system, m3/h.
    pub const MAX_FLOW: f64 = 260.0;
    /// Shut-off pressure rise at nominal speed, bar.
    pub const SHUTOFF_BAR: f64 = 6.0;
    /// Static head of the system, bar.
    pub const STATIC_BAR: f64 = 0.3;
    pub const THERMAL_GAIN: f64 = 0.018;
    /// Thermal time constant, simulated seconds (`TAU_PUMP_SIM_SECS` in `config.rs`).
    pub const TAU_SECS: f64 = 240.0;
    pub const EFFICIENCY: f64 = 0.72;
    pub const STANDBY_KW: f64 = 0.3;
}

/// A fault injected into one machine.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Outer-race spalling: vibration grows exponentially, then saturates above the
    /// damage level, with impacts that grow with it.
    BearingWear,
    /// A failing coolant pump: the thermal gain climbs to [`COOLANT_LOSS_GAIN`] times
    /// its healthy value, so a running machine heats past the trip limit.
    CoolantLoss,
}

/// Bearing wear grows as `WEAR_SCALE * (exp(t / WEAR_TAU_SIM_SECS) - 1)`.
const WEAR_SCALE: f64 = 0.05;
const WEAR_TAU_SIM_SECS: f64 = 150.0;
/// Vibration saturates at `1 + WEAR_MAX` times its healthy level.
const WEAR_MAX: f64 = 5.0;
/// Thermal gain multiplier once the coolant is lost, and how fast it gets there.
const COOLANT_LOSS_GAIN: f64 = 3.6;
const COOLANT_LOSS_TAU_SIM_SECS: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Press,
    Pump,
    /// A type the simulator does not know: it emits nothing.
    Unknown,
}

impl Kind {
    fn sensors(self) -> &'static [Sensor] {
        match self {
            Kind::Press => &PRESS_SENSORS,
            Kind::Pump => &PUMP_SENSORS,
            Kind::Unknown => &[],
        }
    }

    fn nominal_rpm(self) -> f64 {
        match self {
            Kind::Press => press::NOMINAL_RPM,
            Kind::Pump | Kind::Unknown => pump::NOMINAL_RPM,
        }
    }
}

/// One simulated machine: what it is asked to do, its physical state and its sensors'
/// slow drift.
struct Machine {
    path: String,
    kind: Kind,
    rng: SmallRng,
    fault: Option<Fault>,

    running: bool,
    desired_speed: f64,
    flow_setpoint: f64,

    /// Actual shaft speed, rpm.
    speed: f64,
    /// True temperature, degC.
    temperature: f64,
    /// Press: smoothed share of time spent stroking, 0..=1.
    activity: f64,
    /// Press: parts per minute, averaged as a counter would.
    throughput: f64,
    /// Pump: delivered flow, m3/h.
    flow: f64,
    /// Decaying vibration from bearing impacts, mm/s.
    impact: f64,

    /// This unit's deviation from its type's thermal gain (manufacturing spread).
    gain_factor: f64,
    /// Healthy vibration at nominal speed, mm/s.
    base_vibration: f64,
    /// Press: coil-change cycle length (simulated seconds) and phase.
    duty_period: f64,
    duty_phase: f64,
    /// Pump: phases of the two demand swings; ambient: phase of the daily swing.
    demand_phases: (f64, f64),
    ambient_phase: f64,
    /// Per-sensor drift, unit-less (scaled by the sensor's drift), in sensor order.
    drift: Vec<f64>,
    /// Per-sensor calibration offset, in the channel's unit.
    offset: Vec<f64>,
}

/// The simulated plant: a set of machines stepped together.
pub struct Simulator {
    speed: f64,
    /// Simulated seconds since start.
    elapsed: f64,
    machines: Vec<Machine>,
}

impl Simulator {
    /// A simulator for `machines` (asset path, twin type name), in the order readings
    /// are reported. `seed` fixes every random draw: the same seed, machines and calls
    /// give the same series. `speed` is simulated seconds per real second; a speed that
    /// is not a positive finite number is taken as 1. Machines of a type other than
    /// `press` or `pump` are kept (indices stay aligned) but emit nothing.
    ///
    /// Bearing wear goes to the second press of the first line (or its only press) and
    /// a coolant loss to the first press of the second line (or its first pump);
    /// lines are the asset paths' parents, in order of first appearance.
    pub fn new(machines: &[(String, String)], seed: u64, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let faults = choose_faults(machines);
        let machines = machines
            .iter()
            .enumerate()
            .map(|(index, (path, type_name))| {
                let kind = match type_name.as_str() {
                    "press" => Kind::Press,
                    "pump" => Kind::Pump,
                    _ => Kind::Unknown,
                };
                // One stream per machine: a machine's series does not depend on the others.
                let stream = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let rng = SmallRng::seed_from_u64(seed ^ stream);
                Machine::new(path.clone(), kind, rng, faults[index])
            })
            .collect();
        Self {
            speed,
            elapsed: 0.0,
            machines,
        }
    }

    /// Advances the physics by `dt_real_secs * speed` simulated seconds, then emits one
    /// reading per channel per machine: `emit(machine index, channel, value)`. Readings
    /// are finite and inside the channel's declared range. A `dt` that is not a positive
    /// finite number advances nothing and only emits.
    pub fn step(&mut self, dt_real_secs: f64, emit: &mut impl FnMut(usize, &'static str, f64)) {
        let dt_sim = dt_real_secs * self.speed;
        if dt_sim.is_finite() && dt_sim > 0.0 {
            let substeps = ((dt_sim / MAX_SUBSTEP_SIM_SECS).ceil() as usize).clamp(1, MAX_SUBSTEPS);
            let substep = dt_sim / substeps as f64;
            for _ in 0..substeps {
                for machine in &mut self.machines {
                    machine.advance(self.elapsed, substep);
                }
                self.elapsed += substep;
            }
        }
        for (index, machine) in self.machines.iter_mut().enumerate() {
            machine.emit(self.elapsed, index, emit);
        }
    }

    /// Applies a desired value the twin settled on: `running` (0.0 stops the machine,
    /// anything from 0.5 up runs it), `speed` in rpm, and for pumps `flow_setpoint` in
    /// m3/h. Unknown names, machine indices out of range and non-finite values are
    /// ignored.
    pub fn apply_desired(&mut self, machine: usize, name: &str, value: f64) {
        let Some(machine) = self.machines.get_mut(machine) else {
            return;
        };
        if !value.is_finite() {
            return;
        }
        match name {
            "running" => machine.running = value >= 0.5,
            "speed" => machine.desired_speed = value.clamp(0.0, MAX_DRIVE_RPM),
            "flow_setpoint" => machine.flow_setpoint = value.clamp(0.0, pump::MAX_FLOW_SETPOINT),
            _ => {}
        }
    }

    /// The injected faults, one line each: machine, fault, and the real time (seconds
    /// since the simulator started) it begins or began.
    pub fn faults(&self) -> Vec<String> {
        let onset_real = FAULT_ONSET_SIM_SECS / self.speed;
        let when = if self.elapsed >= FAULT_ONSET_SIM_SECS {
            format!("since {onset_real:.1} s")
        } else {
            format!("starts at {onset_real:.1} s")
        };
        self.machines
            .iter()
            .filter_map(|machine| {
                let description = match machine.fault? {
                    Fault::BearingWear => format!(
                        "bearing wear, vibration climbs towards the {BEARING_DAMAGE_MM_S} mm/s damage level and remaining useful life falls"
                    ),
                    Fault::CoolantLoss => format!(
                        "coolant loss, temperature climbs past the {TRIP_DEG_C} degC trip limit while running"
                    ),
                };
                Some(format!("{}: {description} ({when})", machine.path))
            })
            .collect()
    }
}

/// Picks which machine carries which fault (see [`Simulator::new`]).
fn choose_faults(machines: &[(String, String)]) -> Vec<Option<Fault>> {
    // Each machine's line, numbered in order of first appearance.
    let mut line_paths: Vec<&str> = Vec::new();
    let lines: Vec<usize> = machines
        .iter()
        .map(|(path, _)| {
            let line = path.rsplit_once('/').map_or("", |(line, _)| line);
            line_paths
                .iter()
                .position(|l| *l == line)
                .unwrap_or_else(|| {
                    line_paths.push(line);
                    line_paths.len() - 1
                })
        })
        .collect();
    let first_of = |line: usize, type_name: &str, skip: usize| {
        (0..machines.len())
            .filter(|&i| lines[i] == line && machines[i].1 == type_name)
            .nth(skip)
    };
    let mut faults = vec![None; machines.len()];
    if let Some(worn) = first_of(0, "press", 1).or_else(|| first_of(0, "press", 0)) {
        faults[worn] = Some(Fault::BearingWear);
    }
    if let Some(hot) = first_of(1, "press", 0).or_else(|| first_of(1, "pump", 0)) {
        faults[hot] = Some(Fault::CoolantLoss);
    }
    faults
}

impl Machine {
    fn new(path: String, kind: Kind, mut rng: SmallRng, fault: Option<Fault>) -> Self {
        let sensors = kind.sensors();
        let drift = sensors
            .iter()
            .map(|_| noise(&mut rng).clamp(-2.5, 2.5))
            .collect();
        let offset = sensors
            .iter()
            .map(|s| {
                if s.channel.starts_with("temperature") {
                    rng.random_range(-0.2..0.2)
                } else {
                    0.0
                }
            })
            .collect();
        let base_vibration = match kind {
            Kind::Press => rng.random_range(1.9..2.5),
            Kind::Pump | Kind::Unknown => rng.random_range(1.4..1.8),
        };
        let mut machine = Self {
            path,
            kind,
            fault,
            running: true,
            desired_speed: kind.nominal_rpm(),
            flow_setpoint: pump::NOMINAL_FLOW_SETPOINT,
            speed: kind.nominal_rpm(),
            temperature: AMBIENT_DEG_C,
            activity: 1.0,
            throughput: 0.0,
            flow: 0.0,
            impact: 0.0,
            gain_factor: rng.random_range(0.97..1.03),
            base_vibration,
            duty_period: rng.random_range(480.0..720.0),
            duty_phase: rng.random_range(0.0..1.0),
            demand_phases: (rng.random_range(0.0..TAU), rng.random_range(0.0..TAU)),
            ambient_phase: rng.random_range(0.0..TAU),
            drift,
            offset,
            rng,
        };
        // Start in steady state, as a plant that has been running for a while.
        machine.temperature = machine.steady_temperature(0.0);
        machine.activity = machine.pressing(0.0);
        machine.throughput = machine.activity * machine.speed / press::REVS_PER_STROKE;
        machine.flow = machine.flow_target(0.0);
        machine
    }

    fn ambient(&self, t: f64) -> f64 {
        AMBIENT_DEG_C + 0.8 * (TAU * t / 86_400.0 + self.ambient_phase).sin()
    }

    /// Press: 1.0 while stroking, 0.0 while stopped or pausing for a coil change.
    fn pressing(&self, t: f64) -> f64 {
        let in_cycle = (t / self.duty_period + self.duty_phase).fract();
        if self.running && self.speed > 10.0 && in_cycle < press::PRESSING_SHARE {
            1.0
        } else {
            0.0
        }
    }

    /// Pump: the process demand as a multiple of the flow setpoint.
    fn demand(&self, t: f64) -> f64 {
        let (slow, fast) = self.demand_phases;
        1.0 + 0.10 * (TAU * t / 1800.0 + slow).sin() + 0.04 * (TAU * t / 420.0 + fast).sin()
    }

    /// Pump: the flow the valve settles to at this speed.
    fn flow_target(&self, t: f64) -> f64 {
        if !self.running {
            return 0.0;
        }
        let max_flow = pump::MAX_FLOW * self.speed / pump::NOMINAL_RPM;
        (self.flow_setpoint * self.demand(t)).min(max_flow)
    }

    fn thermal_gain(&self, t: f64) -> f64 {
        let healthy = match self.kind {
            Kind::Press => press::THERMAL_GAIN,
            Kind::Pump | Kind::Unknown => pump::THERMAL_GAIN,
        };
        let since = t - FAULT_ONSET_SIM_SECS;
        let loss = if self.fault == Some(Fault::CoolantLoss) && since > 0.0 {
            (COOLANT_LOSS_GAIN - 1.0) * (1.0 - (-since / COOLANT_LOSS_TAU_SIM_SECS).exp())
        } else {
            0.0
        };
        healthy * self.gain_factor * (1.0 + loss)
    }

    /// The temperature the machine settles to at its current speed.
    fn steady_temperature(&self, t: f64) -> f64 {
        self.ambient(t) + self.thermal_gain(t) * self.speed
    }

    /// Bearing wear as the extra share of healthy vibration, 0 when healthy.
    fn wear(&self, t: f64) -> f64 {
        let since = t - FAULT_ONSET_SIM_SECS;
        if self.fault != Some(Fault::BearingWear) || since <= 0.0 {
            return 0.0;
        }
        // Capped exponent: past saturation the growth no longer matters, and the cap
        // keeps `g / (max + g)` away from inf / inf.
        let growth = WEAR_SCALE * ((since / WEAR_TAU_SIM_SECS).min(50.0).exp() - 1.0);
        WEAR_MAX * growth / (WEAR_MAX + growth)
    }

    /// Advances the physics from `t` by `dt` simulated seconds.
    fn advance(&mut self, t: f64, dt: f64) {
        if self.kind == Kind::Unknown {
            return;
        }
        let now = t + dt;
        let target_speed = if self.running {
            self.desired_speed
        } else {
            0.0
        };
        // Drives spin up faster than they coast down.
        let speed_tau = if target_speed >= self.speed {
            6.0
        } else {
            15.0
        };
        self.speed = approach(self.speed, target_speed, dt, speed_tau);
        if target_speed == 0.0 && self.speed < 0.5 {
            self.speed = 0.0;
        }

        match self.kind {
            Kind::Press => {
                let pressing = self.pressing(now);
                self.activity = approach(self.activity, pressing, dt, 5.0);
                let rate = pressing * self.speed / press::REVS_PER_STROKE;
                self.throughput = approach(self.throughput, rate, dt, 10.0);
                if rate == 0.0 && self.throughput < 0.05 {
                    self.throughput = 0.0;
                }
                self.temperature = approach(
                    self.temperature,
                    self.steady_temperature(now),
                    dt,
                    press::TAU_SECS,
                );
            }
            Kind::Pump => {
                self.flow = approach(self.flow, self.flow_target(now), dt, 8.0);
                if !self.running && self.flow < 0.05 {
                    self.flow = 0.0;
                }
                self.temperature = approach(
                    self.temperature,
                    self.steady_temperature(now),
                    dt,
                    pump::TAU_SECS,
                );
            }
            Kind::Unknown => {}
        }

        // Bearing impacts: a Poisson process whose rate and size grow with the wear.
        let wear = self.wear(now);
        self.impact *= (-dt / 3.0).exp();
        if wear > 0.0 && self.speed > 10.0 {
            let probability = 1.0 - (-dt * 0.02 * wear).exp();
            if self.rng.random::<f64>() < probability {
                self.impact += self.rng.random_range(0.5..1.5) * 0.4 * wear * self.base_vibration;
            }
        }

        // Sensor drift: an Ornstein-Uhlenbeck process per sensor, bounded.
        let keep = (-dt / DRIFT_TAU_SIM_SECS).exp();
        let spread = (1.0 - keep * keep).sqrt();
        for index in 0..self.drift.len() {
            let kick = noise(&mut self.rng);
            self.drift[index] = (self.drift[index] * keep + spread * kick).clamp(-2.5, 2.5);
        }
    }

    /// The true value of a channel at `t`, before the sensor's noise and drift.
    fn true_value(&self, t: f64, channel: &str) -> f64 {
        let load = self.speed / self.kind.nominal_rpm();
        match (self.kind, channel) {
            (_, "temperature" | "temperature_b") => self.temperature,
            (_, "vibration") => {
                // Velocity RMS grows with speed; a floor from neighbouring machines.
                let process = match self.kind {
                    Kind::Pump => {
                        let bep = pump::BEP_FLOW * load;
                        let off_bep = if bep > 1.0 {
                            (self.flow / bep - 1.0).abs()
                        } else {
                            0.0
                        };
                        0.25 * load * off_bep
                    }
                    Kind::Press | Kind::Unknown => 0.0,
                };
                0.05 + self.base_vibration * load * (1.0 + self.wear(t)) + process + self.impact
            }
            (Kind::Press, "speed") => self.speed,
            (Kind::Press, "throughput") => self.throughput,
            (Kind::Press, "power_kw") => {
                press::STANDBY_KW + load * (3.1 + 36.0 * (0.45 + 0.55 * self.activity))
            }
            (Kind::Pump, "flow") => self.flow,
            (Kind::Pump, "pressure") => self.pressure(load),
            (Kind::Pump, "power_kw") => {
                let hydraulic_kw =
                    self.flow / 3600.0 * self.pressure(load) * 1e5 / pump::EFFICIENCY / 1000.0;
                let losses_kw = 2.0 * load.powi(3);
                pump::STANDBY_KW + hydraulic_kw + losses_kw
            }
            _ => 0.0,
        }
    }

    /// Pump: discharge pressure from the pump curve at this speed and flow, bar.
    fn pressure(&self, load: f64) -> f64 {
        let rise = pump::SHUTOFF_BAR * load * load - 2.0 * (self.flow / 250.0).powi(2);
        pump::STATIC_BAR + rise.max(0.0)
    }

    fn emit(&mut self, t: f64, index: usize, emit: &mut impl FnMut(usize, &'static str, f64)) {
        for (position, sensor) in self.kind.sensors().iter().enumerate() {
            let truth = self.true_value(t, sensor.channel);
            let drift = self.drift[position] * (sensor.drift_abs + sensor.drift_rel * truth.abs());
            let noise = noise(&mut self.rng) * (sensor.noise_abs + sensor.noise_rel * truth.abs());
            let reading = truth + drift + noise + self.offset[position];
            // A transmitter saturates at the ends of its span.
            let (low, high) = sensor.range;
            let reading = if reading.is_finite() {
                reading.clamp(low, high)
            } else {
                low
            };
            emit(index, sensor.channel, reading);
        }
    }
}

/// First-order approach of `value` to `target` over `dt` with time constant `tau`,
/// exact for any step length.
fn approach(value: f64, target: f64, dt: f64, tau: f64) -> f64 {
    target + (value - target) * (-dt / tau).exp()
}

/// Gaussian-like noise with unit variance, bounded to ±3.46: the sum of four uniform
/// draws (Irwin-Hall), so a healthy signal never produces a freak outlier.
fn noise(rng: &mut SmallRng) -> f64 {
    let sum: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
    (sum - 2.0) * 3f64.sqrt()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use doppel::kernel::{Topology, TwinType, TwinTypes};

    use super::super::config::{dev_plant_toml, dev_types_toml};
    use super::*;

    const SPEED: f64 = 60.0;
    const DT: f64 = 0.1;
    const WORN: &str = "acme/plant-a/line-1/press-2";
    const HOT: &str = "acme/plant-a/line-2/press-4";

    fn plant() -> (TwinTypes, Vec<(String, String)>) {
        let types = TwinTypes::from_toml(&dev_types_toml(SPEED), "dev types.toml").unwrap();
        let topology = Topology::from_toml(dev_plant_toml(), "dev plant.toml", &types).unwrap();
        let machines = topology
            .machines()
            .map(|m| (m.path.to_string(), m.twin_type.clone()))
            .collect();
        (types, machines)
    }

    /// Every reading of a run, by machine and channel, one value per step.
    struct Run {
        machines: Vec<(String, String)>,
        series: Vec<BTreeMap<&'static str, Vec<f64>>>,
        /// Step at which each machine was stopped by the scripted trip.
        tripped_at: Vec<Option<usize>>,
    }

    impl Run {
        fn index(&self, path: &str) -> usize {
            self.machines.iter().position(|(p, _)| p == path).unwrap()
        }

        fn channel(&self, machine: usize, channel: &str) -> &[f64] {
            &self.series[machine][channel]
        }

        fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
            (0..self.machines.len())
                .filter(|&i| self.machines[i].0 != WORN && self.machines[i].0 != HOT)
        }
    }

    /// Runs the plant for `seconds` real seconds in 0.1 s steps, stopping a machine when
    /// its temperature exceeds 95 degC as the trip governor would. Checks every reading
    /// against the declared channels and ranges on the way.
    fn run(seed: u64, seconds: f64) -> Run {
        let (types, machines) = plant();
        let mut simulator = Simulator::new(&machines, seed, SPEED);
        let mut series = vec![BTreeMap::new(); machines.len()];
        let mut tripped_at = vec![None; machines.len()];
        let steps = (seconds / DT).round() as usize;
        for step in 0..steps {
            simulator.step(DT, &mut |machine, channel, value| {
                let twin_type = types.get(&machines[machine].1).unwrap();
                let spec = twin_type
                    .channel(channel)
                    .and_then(|id| twin_type.channel_spec(id))
                    .unwrap_or_else(|| panic!("{channel} is not declared on {}", twin_type.name));
                let (low, high) = spec.range;
                assert!(
                    value.is_finite() && (low..=high).contains(&value),
                    "{channel} = {value}"
                );
                let values: &mut Vec<f64> = series[machine].entry(channel).or_default();
                values.push(value);
            });
            for (machine, values) in series.iter().enumerate() {
                let twin_type = types.get(&machines[machine].1).unwrap();
                assert_eq!(
                    values.len(),
                    twin_type.channels.len(),
                    "a reading per declared channel"
                );
                assert!(
                    values.values().all(|v| v.len() == step + 1),
                    "one reading per channel per step"
                );
                if tripped_at[machine].is_none() && *values["temperature"].last().unwrap() > 95.0 {
                    tripped_at[machine] = Some(step);
                    simulator.apply_desired(machine, "running", 0.0);
                }
            }
        }
        Run {
            machines,
            series,
            tripped_at,
        }
    }

    fn param(twin_type: &TwinType, kind: &str, name: &str) -> f64 {
        let spec = twin_type
            .models
            .iter()
            .chain(&twin_type.governors)
            .find(|c| c.kind == kind)
            .unwrap();
        let value = &spec.params[name];
        value
            .as_float()
            .or(value.as_integer().map(|i| i as f64))
            .unwrap()
    }

    fn max(values: &[f64]) -> f64 {
        values.iter().copied().fold(f64::MIN, f64::max)
    }

    #[test]
    fn coolant_loss_trips_and_healthy_machines_stay_cool() {
        let run = run(7, 10.0);
        let hot = run.index(HOT);
        let trip_step = run.tripped_at[hot].expect("the coolant fault crosses 95 degC");
        let trip_secs = (trip_step + 1) as f64 * DT;
        assert!((3.0..=8.0).contains(&trip_secs), "tripped at {trip_secs} s");

        // After the stop the machine winds down and cools.
        let temperature = run.channel(hot, "temperature");
        assert!(*temperature.last().unwrap() < max(temperature) - 5.0);
        assert_eq!(*run.channel(hot, "throughput").last().unwrap(), 0.0);
        assert!(*run.channel(hot, "speed").last().unwrap() < 5.0);
        assert!(*run.channel(hot, "power_kw").last().unwrap() < 1.0);

        for machine in (0..run.machines.len()).filter(|&m| m != hot) {
            assert_eq!(run.tripped_at[machine], None, "{}", run.machines[machine].0);
            let hottest = max(run.channel(machine, "temperature"));
            assert!(
                hottest < 75.0,
                "{} reached {hottest} degC",
                run.machines[machine].0
            );
        }
    }

    #[test]
    fn same_seed_same_series() {
        let first = run(42, 3.0);
        let again = run(42, 3.0);
        let other = run(43, 3.0);
        assert_eq!(first.series, again.series);
        assert_ne!(first.series, other.series);
    }

    /// The simulator's own tables agree with what `types.toml` declares.
    #[test]
    fn physics_match_the_declared_types() {
        let (types, _) = plant();
        for (name, sensors, nominal, gain, tau) in [
            (
                "press",
                &PRESS_SENSORS[..],
                press::NOMINAL_RPM,
                press::THERMAL_GAIN,
                press::TAU_SECS,
            ),
            (
                "pump",
                &PUMP_SENSORS[..],
                pump::NOMINAL_RPM,
                pump::THERMAL_GAIN,
                pump::TAU_SECS,
            ),
        ] {
            let twin_type = types.get(name).unwrap();
            assert_eq!(twin_type.channels.len(), sensors.len(), "{name}");
            for sensor in sensors {
                let id = twin_type.channel(sensor.channel).unwrap();
                assert_eq!(
                    twin_type.channel_spec(id).unwrap().range,
                    sensor.range,
                    "{name}.{}",
                    sensor.channel
                );
            }
            let speed = twin_type.desired("speed").unwrap().1;
            assert_eq!(speed.initial.as_f64(), nominal, "{name}");
            assert_eq!(param(twin_type, "thermal", "gain"), gain, "{name}");
            assert_eq!(
                param(twin_type, "thermal", "ambient"),
                AMBIENT_DEG_C,
                "{name}"
            );
            assert!(
                (param(twin_type, "thermal", "tau_secs") * SPEED - tau).abs() < 1e-9,
                "{name}"
            );
            assert_eq!(
                param(twin_type, "degradation", "threshold"),
                BEARING_DAMAGE_MM_S,
                "{name}"
            );
            let trip = twin_type
                .governors
                .iter()
                .find(|g| g.kind == "trip")
                .unwrap();
            assert_eq!(trip.params["above"].as_float(), Some(TRIP_DEG_C), "{name}");
        }
        let flow = types
            .get("pump")
            .unwrap()
            .desired("flow_setpoint")
            .unwrap()
            .1;
        assert_eq!(flow.initial.as_f64(), pump::NOMINAL_FLOW_SETPOINT);
        assert_eq!(flow.range.unwrap().1, pump::MAX_FLOW_SETPOINT);
    }

    /// Remaining useful life as the `degradation` model sees it: a least-squares line
    /// through the readings of the last `window` seconds, extrapolated to `threshold`, in
    /// hours; `None` until `min_points` readings or while the trend is flat or falling.
    /// Stricter than the model, which also ignores fits with R² below 0.5 (noise).
    fn rul_hours(
        values: &[f64],
        step: usize,
        window_secs: f64,
        min_points: usize,
        threshold: f64,
    ) -> Option<f64> {
        let first = (step + 1).saturating_sub((window_secs / DT) as usize);
        let points: Vec<(f64, f64)> = (first..=step).map(|i| (i as f64 * DT, values[i])).collect();
        if points.len() < min_points {
            return None;
        }
        let n = points.len() as f64;
        let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
        let covariance: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
        let variance: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
        let slope = covariance / variance;
        if slope <= 0.0 {
            return None;
        }
        let now = mean_v + slope * (step as f64 * DT - mean_t);
        Some(((threshold - now) / slope).max(0.0) / 3600.0)
    }

    #[test]
    fn bearing_wear_brings_rul_below_warning_and_only_there() {
        let (types, _) = plant();
        let press = types.get("press").unwrap();
        let warn_hours = param(press, "degradation", "warn_hours");
        let critical_hours = param(press, "degradation", "critical_hours");
        let window = param(press, "degradation", "window");
        let min_points = param(press, "degradation", "min_points") as usize;
        let threshold = param(press, "degradation", "threshold");

        for seed in 0..8 {
            let run = run(seed, 30.0);
            let worn = run.index(WORN);
            let vibration = run.channel(worn, "vibration");
            let first_below = |limit: f64| {
                (0..vibration.len())
                    .find(|&step| {
                        rul_hours(vibration, step, window, min_points, threshold)
                            .is_some_and(|h| h < limit)
                    })
                    .map(|step| (step + 1) as f64 * DT)
            };
            let warned = first_below(warn_hours).expect("the worn press warns");
            assert!(
                warned <= 7.5,
                "seed {seed}: RUL below warn_hours only at {warned} s"
            );
            let critical = first_below(critical_hours).expect("the worn press goes critical");
            assert!(
                critical <= 20.0,
                "seed {seed}: RUL critical only at {critical} s"
            );
            assert!(max(vibration) < 50.0);

            for machine in run.healthy() {
                let vibration = run.channel(machine, "vibration");
                for step in 0..vibration.len() {
                    let rul = rul_hours(vibration, step, window, min_points, threshold);
                    assert!(
                        rul.is_none_or(|h| h > 2.0 * warn_hours),
                        "seed {seed}: {} RUL {rul:?} h at step {step}",
                        run.machines[machine].0
                    );
                }
            }
        }
    }

    #[test]
    fn healthy_machines_match_the_thermal_model_and_their_sensors_agree() {
        let (types, _) = plant();
        let run = run(3, 30.0);
        for machine in run.healthy() {
            let twin_type = types.get(&run.machines[machine].1).unwrap();
            let gain = param(twin_type, "thermal", "gain");
            let tau = param(twin_type, "thermal", "tau_secs");
            let residual_warn = param(twin_type, "thermal", "residual_warn");
            let speed = twin_type.desired("speed").unwrap().1.initial.as_f64();
            let temperature = run.channel(machine, "temperature");
            let mut predicted = temperature[0];
            for &measured in &temperature[1..] {
                predicted += (25.0 + gain * speed - predicted) * (1.0 - (-DT / tau).exp());
                let residual = measured - predicted;
                assert!(
                    residual.abs() < residual_warn / 2.0,
                    "{}: residual {residual}",
                    run.machines[machine].0
                );
            }
        }
        for machine in (0..run.machines.len()).filter(|&m| run.machines[m].1 == "pump") {
            let a = run.channel(machine, "temperature");
            let b = run.channel(machine, "temperature_b");
            let spread = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                spread < 2.5,
                "{}: sensors disagree by {spread}",
                run.machines[machine].0
            );
            assert!(max(run.channel(machine, "pressure")) < 10.0);
        }
    }

    /// An exponentially weighted mean and variance, scoring each reading before
    /// updating, as an `ewma_anomaly` model would: healthy machines stay under `warn_z`.
    #[test]
    fn healthy_vibration_raises_no_anomaly() {
        let (types, _) = plant();
        let run = run(11, 30.0);
        for machine in run.healthy() {
            let twin_type = types.get(&run.machines[machine].1).unwrap();
            let alpha = param(twin_type, "ewma_anomaly", "alpha");
            let warn_z = param(twin_type, "ewma_anomaly", "warn_z");
            let warmup = param(twin_type, "ewma_anomaly", "warmup") as usize;
            let vibration = run.channel(machine, "vibration");
            let (mut mean, mut variance) = (vibration[0], 0.0_f64);
            for (i, &x) in vibration.iter().enumerate().skip(1) {
                let deviation = x - mean;
                if i > warmup {
                    let z = deviation / variance.sqrt();
                    assert!(
                        z.abs() < warn_z,
                        "{}: z = {z} at step {i}",
                        run.machines[machine].0
                    );
                }
                mean += alpha * deviation;
                variance = (1.0 - alpha) * (variance + alpha * deviation * deviation);
            }
        }
    }

    #[test]
    fn machines_follow_desired_values() {
        let (types, machines) = plant();
        let press = machines
            .iter()
            .position(|(p, _)| p == "acme/plant-a/line-1/press-1")
            .unwrap();
        let pump = machines
            .iter()
            .position(|(p, _)| p == "acme/plant-a/line-1/pump-1")
            .unwrap();
        let mut simulator = Simulator::new(&machines, 5, SPEED);
        let mut latest = vec![BTreeMap::new(); machines.len()];
        let mut step = |simulator: &mut Simulator, seconds: f64| {
            for _ in 0..(seconds / DT) as usize {
                simulator.step(DT, &mut |machine, channel, value| {
                    let twin_type = types.get(&machines[machine].1).unwrap();
                    let range = twin_type
                        .channel_spec(twin_type.channel(channel).unwrap())
                        .unwrap()
                        .range;
                    assert!((range.0..=range.1).contains(&value), "{channel} = {value}");
                    latest[machine].insert(channel, value);
                });
            }
            latest.clone()
        };

        // The envelope's top speed for an hour of simulated time: hotter, but no trip.
        simulator.apply_desired(press, "speed", 2400.0);
        simulator.apply_desired(pump, "speed", 2400.0);
        let hot = step(&mut simulator, 60.0);
        assert!(
            (75.0..92.0).contains(&hot[press]["temperature"]),
            "{}",
            hot[press]["temperature"]
        );
        assert!(hot[press]["speed"] > 2350.0);
        assert!(hot[pump]["pressure"] < 16.0, "{}", hot[pump]["pressure"]);

        simulator.apply_desired(press, "running", 0.0);
        simulator.apply_desired(pump, "running", 0.0);
        let stopped = step(&mut simulator, 10.0);
        assert_eq!(stopped[press]["throughput"], 0.0);
        assert!(stopped[press]["speed"] < 5.0);
        assert!(stopped[press]["temperature"] < hot[press]["temperature"] - 20.0);
        assert!(stopped[pump]["flow"] < 1.0);
        assert!(stopped[pump]["power_kw"] < 1.0);

        simulator.apply_desired(pump, "running", 1.0);
        simulator.apply_desired(pump, "flow_setpoint", 100.0);
        simulator.apply_desired(pump, "speed", f64::NAN);
        simulator.apply_desired(99, "running", 0.0);
        let restarted = step(&mut simulator, 5.0);
        assert!(
            (80.0..120.0).contains(&restarted[pump]["flow"]),
            "{}",
            restarted[pump]["flow"]
        );
    }

    #[test]
    fn faults_name_their_machines_and_large_steps_stay_in_range() {
        let (_, machines) = plant();
        let mut simulator = Simulator::new(&machines, 1, SPEED);
        let faults = simulator.faults();
        assert_eq!(faults.len(), 2);
        assert!(
            faults[0].starts_with(WORN)
                && faults[0].contains("bearing wear")
                && faults[0].contains("starts at 1.5 s")
        );
        assert!(faults[1].starts_with(HOT) && faults[1].contains("coolant loss"));

        let mut readings = 0;
        for dt in [100.0, 0.0, -1.0, f64::NAN, 1e9] {
            simulator.step(dt, &mut |_, _, value| {
                assert!(value.is_finite());
                readings += 1;
            });
        }
        assert_eq!(readings, 5 * (6 * 5 + 4 * 6));
        assert!(simulator.faults()[0].contains("since 1.5 s"));

        let mut unknown = Simulator::new(&[("a/b/c".into(), "turbine".into())], 1, f64::INFINITY);
        unknown.step(1.0, &mut |_, channel, _| panic!("unexpected {channel}"));
        assert!(unknown.faults().is_empty());
    }
}
