//! DTDL v3: twin types from Digital Twins Definition Language Interfaces, and back.
//!
//! [`import`] reads DTDL v3 documents, each one Interface object or an array of them,
//! and writes the twin types they describe as `types.toml` text; [`export`] writes the
//! twin types of a `types.toml` as a JSON array of DTDL v3 Interfaces. Both report what
//! has no equivalent on the other side, or what they had to assume ([`Unmapped`]):
//! nothing is left out silently.
//!
//! # Interfaces and twin types
//!
//! Every Interface at the top of a document becomes one twin type, unless another
//! Interface of the same import extends it or uses it as a Component's schema: such an
//! Interface is a part of the types that use it, not a type of its own. Interfaces
//! written inline (in place of a DTMI) never become types.
//!
//! A type is named after the last segment of its Interface's DTMI, in snake case:
//! `dtmi:com:example:TemperatureController;1` makes `temperature_controller`. When
//! Interfaces would share a name, they take their whole path instead
//! (`com_example_pump`, `com_acme_pump`), and the version when that is not enough
//! (`com_example_pump_v1`, `com_example_pump_v2`).
//!
//! `extends` is resolved across all documents of one import: a type holds the contents
//! of every Interface it extends, directly or not, before its own. A Component's
//! contents are flattened into the type under the Component's name and `_`: Component
//! `thermostat1` of a thermostat gives channel `thermostat1_temperature`. Element names
//! are kept as DTDL spells them, so readings and commands keep the names devices use.
//!
//! # From DTDL
//!
//! | DTDL | Twin type |
//! |---|---|
//! | Interface | a type; its `description`, else its `displayName`, is the type's `description` |
//! | Telemetry, numeric or `boolean` | a channel |
//! | Telemetry, an Object | a channel per numeric field, `<telemetry>_<field>` |
//! | Property, read-only, numeric or `boolean` | a channel: state the machine reports |
//! | Property, `writable`, numeric or `boolean` | a desired value, and a command that sets it |
//! | Command | a command: a numeric request is its parameter, an Object request one parameter per field |
//! | Relationship | a topology hint: [`Import::relationships`] and a comment in the TOML |
//! | Component | its contents, prefixed |
//! | semantic type and `unit` | the unit, spelled as listed at the end |
//!
//! Schemas map to value types: `boolean` → `bool`, `integer` and `long` → `int`, `float`
//! and `double` → `float`. Channels carry numbers; a `boolean` reads 0 or 1.
//!
//! DTDL does not say some things a twin type needs. The import assumes them and reports
//! each as [`Gap::Assumed`]:
//!
//! - a channel's plausible range is the whole span of its schema: `double`
//!   ±1.7976931348623157e308, `float` ±3.4028234663852886e38, `integer` -2147483648 to
//!   2147483647, `long` ±9.223372036854776e18, `boolean` 0 to 1;
//! - `integer` and `float` desired values and parameters are bounded by that span,
//!   `long` and `double` ones only by their type; desired values start at 0 or `false`;
//! - a writable Property is set by a command: a Command named `set_<name>` or
//!   `set<Name>` with one parameter of a fitting type sets it; otherwise the import adds
//!   one (`set_speed` with parameter `speed`, `setTargetTemperature` with parameter
//!   `targetTemperature`); in a Component, the name is prefixed like the Property's
//!   (`thermostat1_setTargetTemperature`);
//! - DTDL does not say what a Command changes: other commands set no desired value.
//!
//! Left out, each reported as [`Gap::LeftOut`]: contents of any other schema (`string`,
//! `date`, `dateTime`, `duration`, `time`, Array, Enum, Map, geospatial, an Object
//! Property, a nested Object), a Command whose request is not numbers, Command
//! responses, Relationships (kept as hints only) and their properties, co-types that are
//! not semantic types (`Historized` and the like), semantic types without the
//! QuantitativeTypes context, keys with no meaning for twin types (`commandType`), and
//! the display names, descriptions and comments of contents (counted per Interface).
//!
//! A document that is not valid DTDL v3 is refused with a [`DtdlError`]: not JSON, not
//! Interface objects, an `@context` that is not `dtmi:dtdl:context;3` (first, when it
//! lists several), a missing or malformed DTMI or name, two contents of one name
//! (inherited ones included), a reference no document defines, an `extends` cycle,
//! more than 10 levels or 1024 Interfaces of `extends`, a Component inside a Component,
//! a unit that is not one of its semantic type's, a schema DTDL v3 does not define, or
//! two contents that flatten to the same name.
//!
//! # To DTDL
//!
//! | Twin type | DTDL |
//! |---|---|
//! | type `press` | Interface `<namespace>:press;1` with the type's `description` |
//! | channel | Telemetry, `double` |
//! | desired value | Property, `writable`: `bool` → `boolean`, `int` → `long`, `float` → `double` |
//! | command | Command; one parameter is its request, several an Object request with a field each |
//! | a unit DTDL has | a semantic type co-type and `unit` |
//!
//! A desired value or parameter bounded by exactly the span of `integer` (or `float`)
//! takes that schema. The export reports everything else a twin type says, which DTDL
//! has no words for: channel ranges (other than the whole `double` span),
//! `max_age_secs`, desired and parameter ranges, initial values other than 0 and
//! `false`, `reported` and `tolerance`, what a command sets (but for a setter as above),
//! `clears_trips`, units DTDL has no unit for (`mm/s`, `parts/min`), properties, models,
//! governors, aggregates and key channels. A name DTDL cannot hold is left out, and of
//! a channel, desired value and command sharing one name only the first is written:
//! DTDL names are unique within an Interface.
//!
//! # Round trips
//!
//! Exporting types and importing the result gives back the same types in everything
//! the export did not report: names, descriptions, units, value types, `integer` and
//! `float` bounds, setters. A desired value no command sets alone comes back with a
//! setter; the export says so. Importing DTDL and exporting the types gives flat
//! Interfaces: Components become prefixes, read-only Properties and Object fields
//! Telemetry.
//!
//! # Units
//!
//! Semantic types and units are those of the QuantitativeTypes extension, which the
//! `@context` names as `dtmi:dtdl:extension:quantitativeTypes;1`. Each DTDL unit has
//! one spelling in twin types; an export writes the first semantic type of a unit's
//! line.
//!
//! - Acceleration: centimetrePerSecondSquared `cm/s2`, gForce `gn`, metrePerSecondSquared
//!   `m/s2`
//! - Angle, Latitude, Longitude: degreeOfArc `deg`, minuteOfArc `arcmin`, radian `rad`,
//!   secondOfArc `arcsec`, turn `turn`
//! - AngularAcceleration: radianPerSecondSquared `rad/s2`
//! - AngularVelocity: degreePerSecond `deg/s`, radianPerSecond `rad/s`, revolutionPerMinute
//!   `rpm`, revolutionPerSecond `rps`
//! - ApparentEnergy: gigavoltAmpereHour `GVAh`, kilovoltAmpereHour `kVAh`,
//!   megavoltAmpereHour `MVAh`, voltAmpereHour `VAh`
//! - ApparentPower: gigavoltAmpere `GVA`, kilovoltAmpere `kVA`, megavoltAmpere `MVA`,
//!   millivoltAmpere `mVA`, voltAmpere `VA`
//! - Area: acre `acre`, hectare `ha`, squareCentimetre `cm2`, squareFoot `ft2`, squareInch
//!   `in2`, squareKilometre `km2`, squareMetre `m2`, squareMillimetre `mm2`
//! - Capacitance: farad `F`, microfarad `uF`, millifarad `mF`, nanofarad `nF`, picofarad
//!   `pF`
//! - Concentration, RelativeDensity, RelativeHumidity: partsPerBillion `ppb`,
//!   partsPerMillion `ppm`, partsPerQuadrillion `ppq`, partsPerTrillion `ppt`, percent `%`,
//!   unity `1`
//! - Current: ampere `A`, kiloampere `kA`, microampere `uA`, milliampere `mA`
//! - DataRate: bitPerSecond `bit/s`, bytePerSecond `B/s`, exbibitPerSecond `Eibit/s`,
//!   exbibytePerSecond `EiB/s`, gibibitPerSecond `Gibit/s`, gibibytePerSecond `GiB/s`,
//!   kibibitPerSecond `Kibit/s`, kibibytePerSecond `KiB/s`, mebibitPerSecond `Mibit/s`,
//!   mebibytePerSecond `MiB/s`, tebibitPerSecond `Tibit/s`, tebibytePerSecond `TiB/s`,
//!   yobibitPerSecond `Yibit/s`, yobibytePerSecond `YiB/s`, zebibitPerSecond `Zibit/s`,
//!   zebibytePerSecond `ZiB/s`
//! - DataSize: bit `bit`, byte `B`, exbibit `Eibit`, exbibyte `EiB`, gibibit `Gibit`,
//!   gibibyte `GiB`, kibibit `Kibit`, kibibyte `KiB`, mebibit `Mibit`, mebibyte `MiB`,
//!   tebibit `Tibit`, tebibyte `TiB`, yobibit `Yibit`, yobibyte `YiB`, zebibit `Zibit`,
//!   zebibyte `ZiB`
//! - Density, Humidity: gramPerCubicMetre `g/m3`, kilogramPerCubicMetre `kg/m3`,
//!   microgramPerCubicMetre `ug/m3`, milligramPerCubicMetre `mg/m3`
//! - Length, Distance: astronomicalUnit `au`, centimetre `cm`, foot `ft`, inch `in`,
//!   kilometre `km`, metre `m`, micrometre `um`, mile `mi`, millimetre `mm`, nanometre
//!   `nm`, nauticalMile `nmi`
//! - ElectricCharge: ampereHour `Ah`, coulomb `C`, milliampereHour `mAh`
//! - Energy: britishThermalUnit `BTU`, electronvolt `eV`, gigajoule `GJ`, gigawattHour
//!   `GWh`, joule `J`, kiloBritishThermalUnit `kBTU`, kilojoule `kJ`, kilowattHour `kWh`,
//!   megaelectronvolt `MeV`, megajoule `MJ`, megawattHour `MWh`, milliwattHour `mWh`,
//!   terawattHour `TWh`, wattHour `Wh`
//! - Power, EnergyRate, Luminosity: britishThermalUnitPerHour `BTU/h`, gigajoulePerHour
//!   `GJ/h`, gigawatt `GW`, horsepower `hp`, joulePerHour `J/h`, joulePerSecond `J/s`,
//!   kiloBritishThermalUnitPerHour `kBTU/h`, kilojoulePerHour `kJ/h`, kilojoulePerSecond
//!   `kJ/s`, kilowatt `kW`, kilowattHourPerYear `kWh/a`, megajoulePerHour `MJ/h`, megawatt
//!   `MW`, microwatt `uW`, milliwatt `mW`, tonOfRefrigeration `TR`, watt `W`
//! - Force, Thrust: newton `N`, ounce `ozf`, pound `lbf`, ton `tonf`
//! - Frequency: gigahertz `GHz`, hertz `Hz`, kilohertz `kHz`, megahertz `MHz`, millihertz
//!   `mHz`
//! - Illuminance: footcandle `fc`, lux `lx`
//! - Inductance: henry `H`, microhenry `uH`, millihenry `mH`
//! - IonizingRadiationDose: gray `Gy`, microgray `uGy`, microsievert `uSv`, milligray
//!   `mGy`, millisievert `mSv`, sievert `Sv`
//! - Irradiance: wattPerSquareMetre `W/m2`
//! - Luminance: candelaPerSquareMetre `cd/m2`
//! - LuminousFlux: lumen `lm`
//! - LuminousIntensity: candela `cd`
//! - MagneticFlux: maxwell `Mx`, weber `Wb`
//! - MagneticInduction: gauss `Gs`, tesla `T`
//! - Mass: gram `g`, kilogram `kg`, massPound `lb`, microgram `ug`, milligram `mg`, slug
//!   `slug`, tonne `t`
//! - MassFlowRate: gramPerHour `g/h`, gramPerSecond `g/s`, kilogramPerHour `kg/h`,
//!   kilogramPerSecond `kg/s`, massPoundPerHour `lb/h`
//! - Pressure: bar `bar`, decapascal `daPa`, hectopascal `hPa`, inchesOfMercury `inHg`,
//!   inchesOfWater `inH2O`, kilopascal `kPa`, millibar `mbar`, millimetresOfMercury `mmHg`,
//!   pascal `Pa`, poundPerSquareInch `psi`
//! - Radioactivity: becquerel `Bq`, gigabecquerel `GBq`, kilobecquerel `kBq`, megabecquerel
//!   `MBq`
//! - ReactiveEnergy: gigavoltAmpereReactiveHour `Gvarh`, kilovoltAmpereReactiveHour
//!   `kvarh`, megavoltAmpereReactiveHour `Mvarh`, voltAmpereReactiveHour `varh`
//! - ReactivePower: gigavoltAmpereReactive `Gvar`, kilovoltAmpereReactive `kvar`,
//!   megavoltAmpereReactive `Mvar`, millivoltAmpereReactive `mvar`, voltAmpereReactive
//!   `var`
//! - Resistance: kiloohm `kohm`, megaohm `Mohm`, milliohm `mohm`, ohm `ohm`
//! - SoundPressure: bel `bel`, decibel `dB`
//! - Temperature: degreeCelsius `degC`, degreeFahrenheit `degF`, kelvin `K`
//! - TimeSpan: day `d`, hour `h`, microsecond `us`, millisecond `ms`, minute `min`,
//!   nanosecond `ns`, second `s`, year `a`
//! - Torque: newtonMetre `Nm`
//! - Velocity: centimetrePerSecond `cm/s`, kilometrePerHour `km/h`, kilometrePerSecond
//!   `km/s`, knot `kn`, metrePerHour `m/h`, metrePerSecond `m/s`, milePerHour `mph`,
//!   milePerSecond `mi/s`
//! - Voltage: kilovolt `kV`, megavolt `MV`, microvolt `uV`, millivolt `mV`, volt `V`
//! - Volume: cubicCentimetre `cm3`, cubicFoot `ft3`, cubicInch `in3`, cubicMetre `m3`,
//!   fluidOunce `floz`, gallon `gal`, litre `l`, millilitre `ml`
//! - VolumeFlowRate: cubicFootPerMinute `ft3/min`, cubicMetrePerHour `m3/h`,
//!   cubicMetrePerMinute `m3/min`, cubicMetrePerSecond `m3/s`, gallonPerHour `gal/h`,
//!   gallonPerMinute `gal/min`, litrePerHour `l/h`, litrePerMinute `l/min`, litrePerSecond
//!   `l/s`, millilitrePerHour `ml/h`, millilitrePerMinute `ml/min`, millilitrePerSecond
//!   `ml/s`

mod export;
mod import;
mod names;
mod units;

use std::fmt;

pub use export::export;
pub use import::import;

use super::ConfigError;
use crate::value::ValueKind;

/// The `@context` of DTDL v3, first in every document.
const CONTEXT: &str = "dtmi:dtdl:context;3";
/// The `@context` of the QuantitativeTypes extension (semantic types and units).
const QUANTITATIVE_TYPES: &str = "dtmi:dtdl:extension:quantitativeTypes;1";

/// The values a `boolean` channel reads.
const BOOLEAN_SPAN: (f64, f64) = (0.0, 1.0);
/// The values of an `integer` (4 bytes, signed).
const INTEGER_SPAN: (f64, f64) = (i32::MIN as f64, i32::MAX as f64);
/// The values of a `long` (8 bytes, signed), as the nearest floats.
const LONG_SPAN: (f64, f64) = (i64::MIN as f64, i64::MAX as f64);
/// The finite values of a `float`.
const FLOAT_SPAN: (f64, f64) = (-(f32::MAX as f64), f32::MAX as f64);
/// The finite values of a `double`.
const DOUBLE_SPAN: (f64, f64) = (-f64::MAX, f64::MAX);

/// Whether a command parameter of kind `param` can set a desired value of kind
/// `desired`: the same kind, or an integer for a float (as twin types allow).
fn compatible(param: ValueKind, desired: ValueKind) -> bool {
    param == desired || (param == ValueKind::Int && desired == ValueKind::Float)
}

/// Twin types read from DTDL documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The twin types as `types.toml` text, which
    /// [`TwinTypes::from_toml`](crate::config::TwinTypes::from_toml) accepts.
    pub toml: String,
    /// Each type made, with the Interface it comes from, in document order.
    pub types: Vec<ImportedType>,
    /// The Relationships of the types' Interfaces, which twin types cannot hold.
    pub relationships: Vec<RelationshipHint>,
    /// What had no equivalent, and what was assumed.
    pub report: Vec<Unmapped>,
}

/// A twin type an import made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedType {
    /// The type's name.
    pub name: String,
    /// The DTMI of the Interface it comes from.
    pub interface: String,
}

/// A DTDL Relationship, kept as a hint for placing twins in the plant topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationshipHint {
    /// The twin type whose Interface declares it.
    pub twin_type: String,
    /// Its name, prefixed like any content of a Component.
    pub name: String,
    /// The DTMI of the Interface it links to; `None`: any.
    pub target: Option<String>,
    /// The twin type made of the target, when the same import made one.
    pub target_type: Option<String>,
    /// Fewest linked twins (`minMultiplicity`), when given.
    pub min: Option<u64>,
    /// Most linked twins (`maxMultiplicity`), when given.
    pub max: Option<u64>,
}

impl fmt::Display for RelationshipHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: relationship {} → ", self.twin_type, self.name)?;
        match &self.target {
            Some(target) => write!(f, "{target}")?,
            None => write!(f, "any Interface")?,
        }
        if let Some(target_type) = &self.target_type {
            write!(f, " (type {target_type})")?;
        }
        write!(f, ", {}..", self.min.unwrap_or(0))?;
        match self.max {
            Some(max) => write!(f, "{max}"),
            None => write!(f, "n"),
        }
    }
}

/// Twin types written as DTDL Interfaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// A JSON array with one DTDL v3 Interface per twin type.
    pub interfaces: serde_json::Value,
    /// What had no equivalent, and what an import of the Interfaces will assume.
    pub report: Vec<Unmapped>,
}

impl Export {
    /// The Interfaces as pretty-printed JSON.
    pub fn json(&self) -> String {
        format!("{:#}", self.interfaces)
    }
}

/// Something one side says that the other cannot, or something assumed for want of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Where: the Interface's DTMI (import) or the twin type's name (export).
    pub interface: String,
    /// What: the content (`thermostat1.getMaxMinReport`, `channel vibration`), several
    /// comma-separated, or empty for the Interface or type itself.
    pub content: String,
    /// Whether it was left out or assumed.
    pub gap: Gap,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for Unmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.interface)?;
        if !self.content.is_empty() {
            write!(f, " {}", self.content)?;
        }
        write!(f, ": {}: {}", self.gap, self.reason)
    }
}

/// The two kinds of [`Unmapped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// It has no equivalent on the other side and was left out.
    LeftOut,
    /// The other side needs what this one does not say: a stated default stands in.
    Assumed,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gap::LeftOut => "left out",
            Gap::Assumed => "assumed",
        })
    }
}

/// Why DTDL documents or twin types could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum DtdlError {
    /// A document is not JSON.
    #[error("{origin}: not JSON: {source}")]
    Json {
        /// The document.
        origin: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A document is neither an Interface object nor an array of them.
    #[error("{origin}: expected an interface object or an array of them, found {found}")]
    NotAnInterface {
        /// The document.
        origin: String,
        /// What it holds instead.
        found: String,
    },
    /// An Interface's `@context` is not DTDL v3.
    #[error(
        "{origin}: interface `{interface}`: `@context` must be \"dtmi:dtdl:context;3\" (first, when several), found {found}"
    )]
    Context {
        /// The document.
        origin: String,
        /// The Interface.
        interface: String,
        /// The `@context` found, as JSON.
        found: String,
    },
    /// A required key is missing.
    #[error("{origin}: {element}: `{field}` is required")]
    Missing {
        /// The document.
        origin: String,
        /// The element that lacks it.
        element: String,
        /// The key.
        field: &'static str,
    },
    /// A DTMI breaks the identifier rules.
    #[error("{origin}: `{dtmi}` is not a valid DTMI: {reason}")]
    BadDtmi {
        /// The document.
        origin: String,
        /// The identifier.
        dtmi: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// An element is not valid DTDL v3.
    #[error("{origin}: {element}: {message}")]
    Invalid {
        /// The document.
        origin: String,
        /// The element.
        element: String,
        /// What is wrong.
        message: String,
    },
    /// Two Interfaces have one DTMI.
    #[error("interface `{id}` is defined twice, in {first} and in {second}")]
    DuplicateInterface {
        /// The DTMI.
        id: String,
        /// The document of the first definition.
        first: String,
        /// The document of the second.
        second: String,
    },
    /// Two contents of an Interface, its own or inherited, have one name.
    #[error(
        "{origin}: interface `{interface}`: two contents are named `{name}` (inherited ones count)"
    )]
    DuplicateName {
        /// The document.
        origin: String,
        /// The Interface.
        interface: String,
        /// The name.
        name: String,
    },
    /// An Interface extends or holds as a Component an Interface no document defines.
    #[error(
        "{origin}: interface `{interface}` refers to `{reference}`, which none of the documents defines"
    )]
    UnknownInterface {
        /// The document.
        origin: String,
        /// The referring Interface.
        interface: String,
        /// The DTMI referred to.
        reference: String,
    },
    /// Interfaces extend each other in a cycle.
    #[error("interfaces extend each other in a cycle: {chain}")]
    ExtendsCycle {
        /// The cycle, `a → b → a`.
        chain: String,
    },
    /// An `extends` chain is deeper than DTDL v3's 10 levels.
    #[error("interface `{interface}` extends more than 10 levels deep, the DTDL v3 limit")]
    ExtendsTooDeep {
        /// The Interface at the bottom of the chain.
        interface: String,
    },
    /// An `extends` hierarchy holds more than DTDL v3's 1024 Interfaces.
    #[error("interface `{interface}` extends more than 1024 interfaces, the DTDL v3 limit")]
    ExtendsTooMany {
        /// The Interface at the bottom of the hierarchy.
        interface: String,
    },
    /// A Component's Interface holds a Component itself.
    #[error(
        "interface `{interface}`: component `{component}` holds component `{inner}`; DTDL v3 does not nest components"
    )]
    NestedComponent {
        /// The Interface with the outer Component.
        interface: String,
        /// The outer Component.
        component: String,
        /// The Component inside it.
        inner: String,
    },
    /// Two contents of a type end up with one name (through a Component prefix or
    /// Object fields).
    #[error("type `{twin_type}`: `{name}` comes from both `{first}` and `{second}`")]
    NameCollision {
        /// The twin type.
        twin_type: String,
        /// The name.
        name: String,
        /// The first content with it.
        first: String,
        /// The second.
        second: String,
    },
    /// Two Interfaces make one twin type name, or two types one DTMI.
    #[error("`{first}` and `{second}` both become `{name}`")]
    TypeNameCollision {
        /// The name they share.
        name: String,
        /// The first Interface or type.
        first: String,
        /// The second.
        second: String,
    },
    /// The documents hold no Interface.
    #[error("the documents hold no interface")]
    NoInterfaces,
    /// The namespace of an export is no DTMI prefix to put type names under.
    #[error("namespace `{namespace}`: {reason}")]
    Namespace {
        /// The namespace given.
        namespace: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The twin types to export are invalid, or (a bug) an import made invalid ones.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{CommandSpec, TwinType, TwinTypes};

    const NAMESPACE: &str = "dtmi:com:example";

    /// A steam boiler that DTDL can say in full: channels over the whole `double` span
    /// with DTDL units, desired values at 0 each with its setter, and `integer` and
    /// `float` bounds.
    const BOILER: &str = r#"
[types.boiler]
description = "Steam boiler"

[types.boiler.channels.pressure]
unit = "bar"
range = [-1.7976931348623157e308, 1.7976931348623157e308]

[types.boiler.channels.steam_flow]
unit = "kg/h"
range = [-1.7976931348623157e308, 1.7976931348623157e308]

[types.boiler.desired.setpoint]
unit = "bar"
initial = 0.0

[types.boiler.desired.burners]
type = "int"
range = [-2147483648, 2147483647]
initial = 0

[types.boiler.desired.enabled]
type = "bool"
initial = false

[types.boiler.commands.set_setpoint]
params.pressure = { type = "float", unit = "bar" }
sets = { setpoint = "pressure" }

[types.boiler.commands.set_burners]
params.count = { type = "int", min = -2147483648, max = 2147483647 }
sets = { burners = "count" }

[types.boiler.commands.set_enabled]
params.enabled = { type = "bool" }
sets = { enabled = "enabled" }

[types.boiler.commands.purge]
params.minutes = { type = "int", unit = "min" }
params.air_flow = { type = "float", min = -3.4028234663852886e38, max = 3.4028234663852886e38, unit = "m3/h" }
"#;

    /// `types` exported, the Interfaces imported, and both sets of types parsed.
    fn round_trip(types: &str) -> (TwinTypes, TwinTypes, Export, Import) {
        let exported =
            export(types, "types.toml", NAMESPACE).unwrap_or_else(|error| panic!("{error}"));
        let imported = import(&[("types.json".to_string(), exported.json())])
            .unwrap_or_else(|error| panic!("{error}\n{}", exported.json()));
        let before = TwinTypes::from_toml(types, "types.toml").unwrap();
        let after = TwinTypes::from_toml(&imported.toml, "imported").unwrap();
        (before, after, exported, imported)
    }

    /// A type's description, channels, desired values and commands, all of them.
    fn everything(twin_type: &TwinType) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            twin_type.description, twin_type.channels, twin_type.desired, twin_type.commands
        )
    }

    #[test]
    fn a_type_dtdl_says_in_full_comes_back_the_same() {
        let (before, after, exported, imported) = round_trip(BOILER);
        assert!(exported.report.is_empty(), "{:#?}", exported.report);
        assert_eq!(imported.types.len(), 1);
        let before: &TwinType = before.get("boiler").unwrap();
        let after: &TwinType = after.get("boiler").unwrap();
        assert_eq!(
            everything(before),
            everything(after),
            "{}\n{}",
            exported.json(),
            imported.toml
        );
    }

    #[test]
    fn the_press_keeps_what_dtdl_says_and_the_export_reports_the_rest() {
        let (before, after, exported, _) = round_trip(&doppel_testkit::twin_types::press());
        let press: &TwinType = before.get("press").unwrap();
        let back: &TwinType = after.get("press").unwrap();
        let channel_names = |t: &TwinType| {
            t.channels
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(channel_names(press), channel_names(back));
        for (channel, returned) in press.channels.iter().zip(&back.channels) {
            if units::dtdl_unit(&channel.unit).is_some() {
                assert_eq!(returned.unit, channel.unit);
            } else {
                assert_eq!(returned.unit, "");
                let content = format!("channel {}", channel.name);
                assert!(
                    exported
                        .report
                        .iter()
                        .any(|entry| entry.content == content
                            && entry.reason.contains("no DTDL unit")),
                    "{content}: {:#?}",
                    exported.report
                );
            }
        }
        let desired = |t: &TwinType| {
            t.desired
                .iter()
                .map(|d| (d.name.clone(), d.kind, d.unit.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(desired(press), desired(back));
        let params = |c: &CommandSpec| {
            c.params
                .iter()
                .map(|p| (p.name.clone(), p.kind, p.unit.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            params(&back.commands["set_speed"]),
            params(&press.commands["set_speed"])
        );
        assert_eq!(
            back.commands["set_speed"].sets,
            press.commands["set_speed"].sets
        );
        // `stop` and `start` set constants and `reset` clears trips, which DTDL cannot
        // say (reported); `running` gets a setter (reported too).
        let commands: Vec<&str> = back.commands.keys().map(String::as_str).collect();
        assert_eq!(
            commands,
            ["reset", "set_running", "set_speed", "start", "stop"]
        );
        assert!(back.commands["stop"].sets.is_empty());
        assert!(back.models.is_empty() && back.governors.is_empty());
    }

    #[test]
    fn dtdl_imported_and_exported_comes_back_flat_and_then_stays_the_same() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dtdl/thermostat.json");
        let thermostat = std::fs::read_to_string(path).unwrap();
        let first = import(&[("thermostat.json".to_string(), thermostat)]).unwrap();
        let (before, after, exported, _) = round_trip(&first.toml);
        let interface = &exported.interfaces[0];
        assert_eq!(interface["@id"], "dtmi:com:example:thermostat;1");
        let class = |content: &serde_json::Value| {
            content["@type"]
                .as_str()
                .or_else(|| content["@type"][0].as_str())
                .unwrap_or_default()
                .to_string()
        };
        let contents: Vec<(String, String)> = interface["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|content| {
                (
                    content["name"].as_str().unwrap().to_string(),
                    class(content),
                )
            })
            .collect();
        for (name, expected) in [
            ("temperature", "Telemetry"),
            ("maxTempSinceLastReboot", "Telemetry"),
            ("targetTemperature", "Property"),
            ("boost", "Command"),
            ("setComfortBand", "Command"),
            ("setTargetTemperature", "Command"),
        ] {
            assert!(
                contents.iter().any(|(n, c)| n == name && c == expected),
                "{name}: {contents:?}"
            );
        }
        assert!(exported.report.is_empty(), "{:#?}", exported.report);
        let before: &TwinType = before.get("thermostat").unwrap();
        let after: &TwinType = after.get("thermostat").unwrap();
        assert_eq!(everything(before), everything(after));
    }

    #[test]
    fn reports_read_as_one_line_each() {
        let entry = Unmapped {
            interface: "dtmi:com:example:Thermostat;1".to_string(),
            content: "getMaxMinReport".to_string(),
            gap: Gap::LeftOut,
            reason: "its request `since` is a `dateTime`".to_string(),
        };
        assert_eq!(
            entry.to_string(),
            "dtmi:com:example:Thermostat;1 getMaxMinReport: left out: its request `since` is a `dateTime`"
        );
        let hint = RelationshipHint {
            twin_type: "building".to_string(),
            name: "contains".to_string(),
            target: None,
            target_type: None,
            min: None,
            max: None,
        };
        assert_eq!(
            hint.to_string(),
            "building: relationship contains → any Interface, 0..n"
        );
    }
}
