//! A compact terminal view of the running plant, rendered from plain data.
//!
//! One header per line with its aggregates, one row per machine: name, type, state,
//! up to four key values with units, health and active alarms, within 100 columns.
//! With colour it is meant to be redrawn in place (it starts by homing the cursor and
//! clearing the screen); without, it is plain text for pipes and logs.

use std::fmt::Write as _;

use doppel::Quality;

/// Widest line the view writes, in terminal columns.
const WIDTH: usize = 100;
/// Key values shown per machine; more are ignored.
const MAX_KEY_VALUES: usize = 4;
const NAME_WIDTH: usize = 9;
const TYPE_WIDTH: usize = 5;
const STATE_WIDTH: usize = 4;
const VALUE_WIDTH: usize = 6;
const UNIT_WIDTH: usize = 4;
/// Health below this is shown as a warning, below [`HEALTH_CRITICAL`] as critical.
const HEALTH_WARNING: f64 = 0.8;
const HEALTH_CRITICAL: f64 = 0.5;

const HOME_AND_CLEAR: &str = "\x1b[H\x1b[2J";
const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";

/// A snapshot of the plant to render.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantView {
    /// Shown on the first line (e.g. `doppel dev · acme/plant-a`).
    pub title: String,
    /// Time since start, in seconds.
    pub elapsed_secs: f64,
    /// The plant's lines, in display order.
    pub lines: Vec<LineRow>,
    /// Where the twins' readings came from and what became of them.
    pub input: Vec<InputRow>,
}

/// One connector or data source feeding the twins, and what became of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRow {
    /// `mqtt:dev`, `dev-simulator`, …
    pub name: String,
    /// Messages received, for a connector; `None` for a source that is not one.
    pub received: Option<u64>,
    /// Whether the connector is connected; `None` for a source that is not one.
    pub connected: Option<bool>,
    /// Readings that became current values.
    pub applied: u64,
    /// Readings kept in history behind a newer value.
    pub late: u64,
    /// Readings ignored as applied before.
    pub duplicate: u64,
    /// Readings the twins refused.
    pub refused: u64,
    /// Input the connector dropped before any twin saw it.
    pub dropped: u64,
}

/// A production line: its aggregates and its machines.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRow {
    /// The line's asset path.
    pub path: String,
    /// Line throughput, parts per minute.
    pub throughput: f64,
    /// Electrical power drawn by the line, kW.
    pub power_kw: f64,
    /// Energy used since start, kWh.
    pub energy_kwh: f64,
    /// Lowest health among the line's machines, 0..=1.
    pub worst_health: f64,
    /// The line's machines, in display order.
    pub machines: Vec<MachineRow>,
}

/// One machine of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRow {
    /// The machine's name (last segment of its asset path).
    pub name: String,
    /// Its twin type.
    pub twin_type: String,
    /// Whether it runs, is stopped or is tripped.
    pub state: MachineState,
    /// Key channel values in display order (up to four shown).
    pub key_values: Vec<KeyValue>,
    /// Health, 0..=1.
    pub health: f64,
    /// Codes of the standing alarms (active, not shelved, out of service or
    /// suppressed).
    pub alarms: Vec<String>,
    /// Desired values not confirmed at the machine, as `<name> pending` or
    /// `<name> failed`.
    pub undelivered: Vec<String>,
}

/// A key channel's current value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The channel.
    pub channel: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Its quality: a stale value shows as `~55.2`, a bad one as `!55.2`.
    pub quality: Quality,
}

impl KeyValue {
    fn marker(&self) -> (&'static str, &'static str) {
        match self.quality {
            Quality::Good => ("", ""),
            Quality::Uncertain => ("?", YELLOW),
            Quality::Stale => ("~", YELLOW),
            Quality::Bad => ("!", RED),
        }
    }
}

/// What a machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    /// Running.
    Run,
    /// Stopped by a command.
    Stop,
    /// Stopped by a latched safety trip.
    Trip,
}

impl MachineState {
    fn label(self) -> &'static str {
        match self {
            MachineState::Run => "RUN",
            MachineState::Stop => "STOP",
            MachineState::Trip => "TRIP",
        }
    }

    fn color(self) -> &'static str {
        match self {
            MachineState::Run => GREEN,
            MachineState::Stop => DIM,
            MachineState::Trip => RED,
        }
    }
}

/// Renders the plant, one row per machine, no line wider than 100 columns. With
/// `color`, the text uses ANSI colours (red trips, yellow warnings) and starts with
/// cursor-home and clear-screen so that repeated renders redraw in place; without, it
/// is plain text.
pub fn render(view: &PlantView, color: bool) -> String {
    let paint = Painter { color };
    let mut out = String::new();
    if color {
        out.push_str(HOME_AND_CLEAR);
    }
    render_title(view, &paint, &mut out);
    for line in &view.lines {
        out.push('\n');
        render_line_header(line, &paint, &mut out);
        for machine in &line.machines {
            render_machine(machine, &paint, &mut out);
        }
    }
    render_input(view, &paint, &mut out);
    render_legend(view, &paint, &mut out);
    out
}

/// One line per connector or source: received, applied, late, duplicate, refused,
/// dropped; in yellow when anything was refused or dropped, or it is offline.
fn render_input(view: &PlantView, paint: &Painter, out: &mut String) {
    if view.input.is_empty() {
        return;
    }
    out.push('\n');
    for row in &view.input {
        let mut text = format!("input {}", row.name);
        if row.connected == Some(false) {
            text.push_str(" (offline)");
        }
        if let Some(received) = row.received {
            let _ = write!(text, "  received {received}");
        }
        let _ = write!(
            text,
            "  applied {}  late {}  duplicate {}  refused {}",
            row.applied, row.late, row.duplicate, row.refused
        );
        if row.received.is_some() {
            let _ = write!(text, "  dropped {}", row.dropped);
        }
        let text = cut(&text, WIDTH);
        let lost = row.refused > 0 || row.dropped > 0 || row.connected == Some(false);
        let _ = writeln!(
            out,
            "{}",
            paint.with(if lost { YELLOW } else { DIM }, &text)
        );
    }
}

fn render_title(view: &PlantView, paint: &Painter, out: &mut String) {
    let machines = || view.lines.iter().flat_map(|line| &line.machines);
    let count = |state: MachineState| machines().filter(|m| m.state == state).count();
    let alarms: usize = machines().map(|m| m.alarms.len()).sum();
    let summary = format!(
        "{} run · {} stop · {} trip · {} alarm{}   {}",
        count(MachineState::Run),
        count(MachineState::Stop),
        count(MachineState::Trip),
        alarms,
        if alarms == 1 { "" } else { "s" },
        format_elapsed(view.elapsed_secs),
    );
    let title_width = WIDTH.saturating_sub(summary.chars().count() + 2);
    let title = pad(&view.title, title_width);
    let _ = writeln!(out, "{}  {summary}", paint.with(BOLD, &title));
}

fn render_line_header(line: &LineRow, paint: &Painter, out: &mut String) {
    let aggregates = format!(
        "throughput {}/min  power {} kW  energy {} kWh  worst health ",
        format_number(line.throughput, 1),
        format_number(line.power_kw, 1),
        format_number(
            line.energy_kwh,
            if line.energy_kwh.abs() < 10.0 { 2 } else { 1 }
        ),
    );
    let health = format_percent(line.worst_health);
    let path_width = WIDTH.saturating_sub(aggregates.chars().count() + health.chars().count() + 2);
    let path = pad(&line.path, path_width);
    let _ = writeln!(
        out,
        "{}  {aggregates}{}",
        paint.with(BOLD, &path),
        paint.with(health_color(line.worst_health), &health)
    );
}

fn render_machine(machine: &MachineRow, paint: &Painter, out: &mut String) {
    // Lay out plain, padded cells first and colour them afterwards, so alignment holds.
    let mut cells: Vec<(String, &str)> = vec![
        (format!("  {} ", pad(&machine.name, NAME_WIDTH)), ""),
        (format!("{} ", pad(&machine.twin_type, TYPE_WIDTH)), DIM),
        (
            pad(machine.state.label(), STATE_WIDTH),
            machine.state.color(),
        ),
    ];
    for index in 0..MAX_KEY_VALUES {
        let (text, color) = match machine.key_values.get(index) {
            Some(key) => {
                let (marker, color) = key.marker();
                let value = format!("{marker}{}", format_value(key.value));
                let text = format!(
                    " {value:>VALUE_WIDTH$} {}",
                    pad(&display_unit(&key.unit), UNIT_WIDTH)
                );
                (text, color)
            }
            None => (" ".repeat(1 + VALUE_WIDTH + 1 + UNIT_WIDTH), ""),
        };
        cells.push((text, color));
    }
    let health = format!(
        "  {} {:>4}",
        gauge(machine.health),
        format_percent(machine.health)
    );
    cells.push((health, health_color(machine.health)));

    if !machine.undelivered.is_empty() {
        let used: usize = cells.iter().map(|(text, _)| text.chars().count()).sum();
        let text = fit_list(&machine.undelivered, WIDTH.saturating_sub(used + 2));
        let color = if machine.undelivered.iter().any(|d| d.ends_with("failed")) {
            RED
        } else {
            YELLOW
        };
        cells.push(("  ".to_string(), ""));
        cells.push((text, color));
    }
    if !machine.alarms.is_empty() {
        let used: usize = cells.iter().map(|(text, _)| text.chars().count()).sum();
        let alarms = fit_list(&machine.alarms, WIDTH.saturating_sub(used + 2));
        let color = if machine.alarms.iter().any(|a| a.starts_with("trip")) {
            RED
        } else {
            YELLOW
        };
        cells.push(("  ".to_string(), ""));
        cells.push((alarms, color));
    }
    let row: String = cells
        .iter()
        .map(|(text, color)| paint.with(color, text))
        .collect();
    out.push_str(row.trim_end());
    out.push('\n');
}

/// Which key channel each column shows, per twin type, so a reader can tell the two
/// `degC` columns of a pump apart.
fn render_legend(view: &PlantView, paint: &Painter, out: &mut String) {
    let mut legend: Vec<(String, Vec<String>)> = Vec::new();
    for machine in view.lines.iter().flat_map(|line| &line.machines) {
        if machine.key_values.is_empty() || legend.iter().any(|(t, _)| *t == machine.twin_type) {
            continue;
        }
        let names = machine
            .key_values
            .iter()
            .take(MAX_KEY_VALUES)
            .map(|key| key.channel.clone())
            .collect();
        legend.push((machine.twin_type.clone(), names));
    }
    if legend.is_empty() {
        return;
    }
    let text: Vec<String> = legend
        .iter()
        .map(|(t, names)| format!("{t}: {}", names.join(", ")))
        .collect();
    let text = cut(&text.join(" · "), WIDTH);
    let _ = writeln!(out, "\n{}", paint.with(DIM, &text));
    let marked = view
        .lines
        .iter()
        .flat_map(|line| &line.machines)
        .flat_map(|machine| machine.key_values.iter().take(MAX_KEY_VALUES))
        .any(|key| key.quality != Quality::Good);
    if marked {
        let _ = writeln!(out, "{}", paint.with(DIM, "~ stale, ! bad, ? uncertain"));
    }
}

/// Wraps text in ANSI colour codes when colour is on.
struct Painter {
    color: bool,
}

impl Painter {
    fn with(&self, code: &str, text: &str) -> String {
        if self.color && !code.is_empty() && !text.trim().is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

fn health_color(health: f64) -> &'static str {
    if !health.is_finite() || health < HEALTH_CRITICAL {
        RED
    } else if health < HEALTH_WARNING {
        YELLOW
    } else {
        GREEN
    }
}

/// Cuts `text` to at most `width` characters, marking the cut with `…`.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// Cuts or pads `text` to exactly `width` characters.
fn pad(text: &str, width: usize) -> String {
    let text = cut(text, width);
    let count = text.chars().count();
    format!("{text}{}", " ".repeat(width - count))
}

/// Joins as many items as fit in `width`, then `+N` for the rest; a first item too long
/// to fit is cut short.
fn fit_list(items: &[String], width: usize) -> String {
    let mut shown = String::new();
    for (index, item) in items.iter().enumerate() {
        let candidate = if shown.is_empty() {
            item.clone()
        } else {
            format!("{shown} {item}")
        };
        let rest = items.len() - index - 1;
        let suffix = if rest > 0 {
            format!(" +{rest}")
        } else {
            String::new()
        };
        if candidate.chars().count() + suffix.chars().count() > width {
            if !shown.is_empty() {
                return format!("{shown} +{}", items.len() - index);
            }
            // Not even the first fits: show as much of it as leaves room for the count.
            return cut(
                &format!("{}{suffix}", cut(item, width.saturating_sub(suffix.len()))),
                width,
            );
        }
        shown = candidate;
    }
    shown
}

/// Engineering units as they read best in a narrow column.
fn display_unit(unit: &str) -> String {
    match unit {
        "degC" => "°C".to_string(),
        "m3/h" => "m³/h".to_string(),
        "parts/min" => "/min".to_string(),
        other => other.to_string(),
    }
}

/// A value in at most six characters: more decimals for small numbers.
fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs();
    let decimals = if magnitude >= 1000.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.chars().count() <= VALUE_WIDTH {
        text
    } else {
        format!("{value:.1e}")
    }
}

fn format_number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    let text = format!("{value:.decimals$}");
    // A sum of deltas that cancel can land a hair below zero: no `-0.0`.
    match text.strip_prefix('-') {
        Some(digits) if digits.chars().all(|c| c == '0' || c == '.') => digits.to_string(),
        _ => text,
    }
}

fn format_percent(health: f64) -> String {
    if health.is_finite() {
        format!("{:.0}%", health.clamp(0.0, 1.0) * 100.0)
    } else {
        "?%".to_string()
    }
}

/// One character whose height shows health.
fn gauge(health: f64) -> char {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if !health.is_finite() {
        return ' ';
    }
    LEVELS[(health.clamp(0.0, 1.0) * 7.0).round() as usize]
}

fn format_elapsed(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--:--:--".to_string();
    }
    let total = secs as u64;
    format!(
        "{:02}:{:02}:{:02}",
        total / 3600,
        total / 60 % 60,
        total % 60
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_sum_that_cancels_to_almost_zero_prints_as_zero() {
        assert_eq!(super::format_number(-0.00001, 1), "0.0");
        assert_eq!(super::format_number(-0.5, 1), "-0.5");
        assert_eq!(super::format_number(f64::NAN, 1), "—");
    }
    use super::*;

    fn good(channel: &str, value: f64, unit: &str) -> KeyValue {
        KeyValue {
            channel: channel.to_string(),
            value,
            unit: unit.to_string(),
            quality: Quality::Good,
        }
    }

    fn machine(
        name: &str,
        twin_type: &str,
        state: MachineState,
        health: f64,
        alarms: &[&str],
    ) -> MachineRow {
        let key_values = match twin_type {
            "press" => vec![
                good("temperature", 55.23, "degC"),
                good("vibration", 2.314, "mm/s"),
                good("speed", 1200.4, "rpm"),
                good("throughput", 29.96, "parts/min"),
            ],
            _ => vec![
                good("flow", 151.2, "m3/h"),
                good("pressure", 5.58, "bar"),
                good("temperature", f64::NAN, "degC"),
            ],
        };
        MachineRow {
            name: name.to_string(),
            twin_type: twin_type.to_string(),
            state,
            key_values,
            health,
            alarms: alarms.iter().map(|a| a.to_string()).collect(),
            undelivered: Vec::new(),
        }
    }

    fn plant() -> PlantView {
        PlantView {
            title: "doppel dev · acme/plant-a".to_string(),
            elapsed_secs: 3725.4,
            lines: vec![
                LineRow {
                    path: "acme/plant-a/line-1".to_string(),
                    throughput: 89.7,
                    power_kw: 182.25,
                    energy_kwh: 3.456,
                    worst_health: 0.42,
                    machines: vec![
                        machine("press-1", "press", MachineState::Run, 0.98, &[]),
                        machine(
                            "press-2",
                            "press",
                            MachineState::Run,
                            0.42,
                            &["rul_low", "vibration_z"],
                        ),
                        machine("pump-1", "pump", MachineState::Stop, 1.0, &[]),
                    ],
                },
                LineRow {
                    path: "acme/plant-a/line-2".to_string(),
                    throughput: 59.9,
                    power_kw: 140.0,
                    energy_kwh: 12.25,
                    worst_health: 0.7,
                    machines: vec![
                        machine(
                            "press-4",
                            "press",
                            MachineState::Trip,
                            0.7,
                            &["trip:temperature", "thermal_residual"],
                        ),
                        machine(
                            "a-very-long-machine-name",
                            "pump",
                            MachineState::Run,
                            0.9,
                            &[
                                "alarm_one_is_long",
                                "alarm_two_is_long",
                                "alarm_three_is_long",
                            ],
                        ),
                    ],
                },
            ],
            input: Vec::new(),
        }
    }

    #[test]
    fn input_shows_what_each_connector_received_and_lost() {
        let mut view = plant();
        let row = |name: &str, received, connected, refused, dropped| InputRow {
            name: name.to_string(),
            received,
            connected,
            applied: 1200,
            late: 3,
            duplicate: 4,
            refused,
            dropped,
        };
        view.input = vec![
            row("mqtt:dev", Some(1210), Some(true), 0, 0),
            row("mqtt:plant", Some(50), Some(false), 2, 7),
            row("dev-simulator", None, None, 0, 0),
        ];
        let text = render(&view, true);
        assert!(
            text.contains(&format!(
                "{DIM}input mqtt:dev  received 1210  applied 1200  late 3  duplicate 4  refused 0  dropped 0{RESET}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{YELLOW}input mqtt:plant (offline)  received 50  applied 1200  late 3  duplicate 4  refused 2  dropped 7{RESET}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{DIM}input dev-simulator  applied 1200  late 3  duplicate 4  refused 0{RESET}"
            )),
            "{text}"
        );
    }

    #[test]
    fn stale_and_bad_values_are_marked_and_explained() {
        let mut view = plant();
        let press = &mut view.lines[0].machines[0];
        press.key_values[0].quality = Quality::Stale;
        press.key_values[1].quality = Quality::Bad;
        let text = render(&view, false);
        assert!(text.contains("~55.2 °C"), "{text}");
        assert!(text.contains("!2.31"), "{text}");
        assert!(text.contains("~ stale, ! bad, ? uncertain"), "{text}");
        assert!(
            !render(&plant(), false).contains("~ stale"),
            "only when shown"
        );
    }

    #[test]
    fn plain_text_shows_every_machine_state_and_alarm() {
        let text = render(&plant(), false);
        assert!(!text.contains('\x1b'), "no escape codes in plain mode");
        for name in ["press-1", "press-2", "pump-1", "press-4", "a-very-l…"] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        for needle in [
            "TRIP",
            "STOP",
            "RUN",
            "rul_low",
            "vibration_z",
            "trip:temperature",
            "+",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert!(text.contains("01:02:05"), "{text}");
        assert!(
            text.contains("3 run · 1 stop · 1 trip · 7 alarms"),
            "{text}"
        );
        assert!(
            text.contains("throughput 89.7/min  power 182.2 kW  energy 3.46 kWh  worst health 42%"),
            "{text}"
        );
        assert!(text.contains("55.2 °C"), "{text}");
        assert!(text.contains("1200 rpm"), "{text}");
        assert!(
            text.contains("—"),
            "a missing value shows as a dash:\n{text}"
        );
        assert!(
            text.contains(
                "\npress: temperature, vibration, speed, throughput · pump: flow, pressure"
            ),
            "{text}"
        );
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }

    #[test]
    fn machine_rows_align() {
        let text = render(&plant(), false);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  press-")).collect();
        assert_eq!(rows.len(), 3);
        let health_column = |row: &str| row.char_indices().position(|(_, c)| c == '%');
        let first = health_column(rows[0]);
        assert!(first.is_some());
        assert!(
            rows.iter().all(|row| health_column(row) == first),
            "{rows:#?}"
        );
    }

    #[test]
    fn color_mode_redraws_in_place_and_colors_trips() {
        let text = render(&plant(), true);
        assert!(text.starts_with("\x1b[H\x1b[2J"));
        assert!(text.contains(&format!("{RED}TRIP{RESET}")), "{text:?}");
        assert!(
            text.contains(&format!("{YELLOW}rul_low vibration_z{RESET}")),
            "{text:?}"
        );
        let stripped = strip_ansi(&text);
        for line in stripped.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
        assert_eq!(stripped, render(&plant(), false));
    }

    #[test]
    fn helpers_handle_odd_input() {
        assert_eq!(format_value(1234.6), "1235");
        assert_eq!(format_value(-20.0), "-20.0");
        assert_eq!(format_value(0.5), "0.50");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(12_345_678.0), "1.2e7");
        assert_eq!(format_value(f64::INFINITY), "—");
        assert_eq!(format_percent(1.7), "100%");
        assert_eq!(gauge(0.0), '▁');
        assert_eq!(gauge(1.0), '█');
        assert_eq!(format_elapsed(f64::NAN), "--:--:--");
        assert_eq!(pad("abcdef", 4), "abc…");
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(cut("ab", 0), "");
        let alarms: Vec<String> = ["aaaa", "bbbb", "cccc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(fit_list(&alarms, 14), "aaaa bbbb cccc");
        assert_eq!(fit_list(&alarms, 12), "aaaa bbbb +1");
        assert_eq!(fit_list(&alarms, 8), "aaaa +2");
        assert_eq!(fit_list(&alarms, 1), "…");
        let long: Vec<String> = ["thermal:temperature", "anomaly:vibration"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(fit_list(&long, 12), "thermal:… +1");
        assert_eq!(fit_list(&long[..1], 12), "thermal:tem…");
        let empty = PlantView {
            title: String::new(),
            elapsed_secs: 0.0,
            lines: Vec::new(),
            input: Vec::new(),
        };
        assert!(render(&empty, false).contains("0 run"));
    }

    fn strip_ansi(text: &str) -> String {
        let text = text.strip_prefix(HOME_AND_CLEAR).unwrap_or(text);
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
