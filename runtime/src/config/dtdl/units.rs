//! The semantic types and units of the DTDL v3 QuantitativeTypes extension
//! (`dtmi:dtdl:extension:quantitativeTypes;1`), each unit with the spelling twin types
//! use for it.
//!
//! The table holds every unit type of the extension. Semantic types that share a unit
//! type (`Power`, `EnergyRate` and `Luminosity` all use `PowerUnit`) share a row; the
//! first of them is the one an export writes for a unit of that row. Doppel spellings
//! are ASCII (`degC`, `m3/h`, `uA`), each names one unit only, and where no short
//! symbol is in common use the spelling is a word (`turn`, `slug`).

/// A unit type: the semantic types measured in it and its units.
struct UnitType {
    /// Semantic types whose `unit` is one of [`Self::units`]; the first is exported.
    semantic_types: &'static [&'static str],
    /// Each unit: its DTDL name and the twin types' spelling.
    units: &'static [(&'static str, &'static str)],
}

/// A DTDL unit with the semantic type an export writes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DtdlUnit {
    /// The semantic type (`Temperature`).
    pub semantic_type: &'static str,
    /// The DTDL unit (`degreeCelsius`).
    pub unit: &'static str,
}

/// Why a semantic type and unit pair cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UnitProblem {
    /// The co-type is not a semantic type of the extension.
    NotSemantic,
    /// The unit is not one of the semantic type's unit type.
    WrongUnit {
        /// The semantic type's units, comma-separated.
        allowed: String,
    },
}

/// The twin types' spelling of `unit`, given on an element co-typed `semantic_type`.
pub(super) fn doppel_unit(semantic_type: &str, unit: &str) -> Result<&'static str, UnitProblem> {
    let Some(unit_type) = UNIT_TYPES
        .iter()
        .find(|row| row.semantic_types.contains(&semantic_type))
    else {
        return Err(UnitProblem::NotSemantic);
    };
    unit_type
        .units
        .iter()
        .find(|(dtdl, _)| *dtdl == unit)
        .map(|(_, doppel)| *doppel)
        .ok_or_else(|| UnitProblem::WrongUnit {
            allowed: unit_type
                .units
                .iter()
                .map(|(dtdl, _)| *dtdl)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether `co_type` is a semantic type of the extension.
pub(super) fn is_semantic_type(co_type: &str) -> bool {
    UNIT_TYPES
        .iter()
        .any(|row| row.semantic_types.contains(&co_type))
}

/// The DTDL unit and semantic type for a twin type's unit spelling, if DTDL has one.
pub(super) fn dtdl_unit(doppel: &str) -> Option<DtdlUnit> {
    UNIT_TYPES.iter().find_map(|row| {
        row.units
            .iter()
            .find(|(_, spelling)| *spelling == doppel)
            .map(|(unit, _)| DtdlUnit {
                semantic_type: row.semantic_types[0],
                unit,
            })
    })
}

/// Every unit type of QuantitativeTypes v1, in the order of the extension's table.
const UNIT_TYPES: &[UnitType] = &[
    UnitType {
        semantic_types: &["Acceleration"],
        units: &[
            ("centimetrePerSecondSquared", "cm/s2"),
            ("gForce", "gn"),
            ("metrePerSecondSquared", "m/s2"),
        ],
    },
    UnitType {
        semantic_types: &["Angle", "Latitude", "Longitude"],
        units: &[
            ("degreeOfArc", "deg"),
            ("minuteOfArc", "arcmin"),
            ("radian", "rad"),
            ("secondOfArc", "arcsec"),
            ("turn", "turn"),
        ],
    },
    UnitType {
        semantic_types: &["AngularAcceleration"],
        units: &[("radianPerSecondSquared", "rad/s2")],
    },
    UnitType {
        semantic_types: &["AngularVelocity"],
        units: &[
            ("degreePerSecond", "deg/s"),
            ("radianPerSecond", "rad/s"),
            ("revolutionPerMinute", "rpm"),
            ("revolutionPerSecond", "rps"),
        ],
    },
    UnitType {
        semantic_types: &["ApparentEnergy"],
        units: &[
            ("gigavoltAmpereHour", "GVAh"),
            ("kilovoltAmpereHour", "kVAh"),
            ("megavoltAmpereHour", "MVAh"),
            ("voltAmpereHour", "VAh"),
        ],
    },
    UnitType {
        semantic_types: &["ApparentPower"],
        units: &[
            ("gigavoltAmpere", "GVA"),
            ("kilovoltAmpere", "kVA"),
            ("megavoltAmpere", "MVA"),
            ("millivoltAmpere", "mVA"),
            ("voltAmpere", "VA"),
        ],
    },
    UnitType {
        semantic_types: &["Area"],
        units: &[
            ("acre", "acre"),
            ("hectare", "ha"),
            ("squareCentimetre", "cm2"),
            ("squareFoot", "ft2"),
            ("squareInch", "in2"),
            ("squareKilometre", "km2"),
            ("squareMetre", "m2"),
            ("squareMillimetre", "mm2"),
        ],
    },
    UnitType {
        semantic_types: &["Capacitance"],
        units: &[
            ("farad", "F"),
            ("microfarad", "uF"),
            ("millifarad", "mF"),
            ("nanofarad", "nF"),
            ("picofarad", "pF"),
        ],
    },
    UnitType {
        semantic_types: &["Concentration", "RelativeDensity", "RelativeHumidity"],
        units: &[
            ("partsPerBillion", "ppb"),
            ("partsPerMillion", "ppm"),
            ("partsPerQuadrillion", "ppq"),
            ("partsPerTrillion", "ppt"),
            ("percent", "%"),
            ("unity", "1"),
        ],
    },
    UnitType {
        semantic_types: &["Current"],
        units: &[
            ("ampere", "A"),
            ("kiloampere", "kA"),
            ("microampere", "uA"),
            ("milliampere", "mA"),
        ],
    },
    UnitType {
        semantic_types: &["DataRate"],
        units: &[
            ("bitPerSecond", "bit/s"),
            ("bytePerSecond", "B/s"),
            ("exbibitPerSecond", "Eibit/s"),
            ("exbibytePerSecond", "EiB/s"),
            ("gibibitPerSecond", "Gibit/s"),
            ("gibibytePerSecond", "GiB/s"),
            ("kibibitPerSecond", "Kibit/s"),
            ("kibibytePerSecond", "KiB/s"),
            ("mebibitPerSecond", "Mibit/s"),
            ("mebibytePerSecond", "MiB/s"),
            ("tebibitPerSecond", "Tibit/s"),
            ("tebibytePerSecond", "TiB/s"),
            ("yobibitPerSecond", "Yibit/s"),
            ("yobibytePerSecond", "YiB/s"),
            ("zebibitPerSecond", "Zibit/s"),
            ("zebibytePerSecond", "ZiB/s"),
        ],
    },
    UnitType {
        semantic_types: &["DataSize"],
        units: &[
            ("bit", "bit"),
            ("byte", "B"),
            ("exbibit", "Eibit"),
            ("exbibyte", "EiB"),
            ("gibibit", "Gibit"),
            ("gibibyte", "GiB"),
            ("kibibit", "Kibit"),
            ("kibibyte", "KiB"),
            ("mebibit", "Mibit"),
            ("mebibyte", "MiB"),
            ("tebibit", "Tibit"),
            ("tebibyte", "TiB"),
            ("yobibit", "Yibit"),
            ("yobibyte", "YiB"),
            ("zebibit", "Zibit"),
            ("zebibyte", "ZiB"),
        ],
    },
    UnitType {
        semantic_types: &["Density", "Humidity"],
        units: &[
            ("gramPerCubicMetre", "g/m3"),
            ("kilogramPerCubicMetre", "kg/m3"),
            ("microgramPerCubicMetre", "ug/m3"),
            ("milligramPerCubicMetre", "mg/m3"),
        ],
    },
    UnitType {
        semantic_types: &["Length", "Distance"],
        units: &[
            ("astronomicalUnit", "au"),
            ("centimetre", "cm"),
            ("foot", "ft"),
            ("inch", "in"),
            ("kilometre", "km"),
            ("metre", "m"),
            ("micrometre", "um"),
            ("mile", "mi"),
            ("millimetre", "mm"),
            ("nanometre", "nm"),
            ("nauticalMile", "nmi"),
        ],
    },
    UnitType {
        semantic_types: &["ElectricCharge"],
        units: &[
            ("ampereHour", "Ah"),
            ("coulomb", "C"),
            ("milliampereHour", "mAh"),
        ],
    },
    UnitType {
        semantic_types: &["Energy"],
        units: &[
            ("britishThermalUnit", "BTU"),
            ("electronvolt", "eV"),
            ("gigajoule", "GJ"),
            ("gigawattHour", "GWh"),
            ("joule", "J"),
            ("kiloBritishThermalUnit", "kBTU"),
            ("kilojoule", "kJ"),
            ("kilowattHour", "kWh"),
            ("megaelectronvolt", "MeV"),
            ("megajoule", "MJ"),
            ("megawattHour", "MWh"),
            ("milliwattHour", "mWh"),
            ("terawattHour", "TWh"),
            ("wattHour", "Wh"),
        ],
    },
    UnitType {
        semantic_types: &["Power", "EnergyRate", "Luminosity"],
        units: &[
            ("britishThermalUnitPerHour", "BTU/h"),
            ("gigajoulePerHour", "GJ/h"),
            ("gigawatt", "GW"),
            ("horsepower", "hp"),
            ("joulePerHour", "J/h"),
            ("joulePerSecond", "J/s"),
            ("kiloBritishThermalUnitPerHour", "kBTU/h"),
            ("kilojoulePerHour", "kJ/h"),
            ("kilojoulePerSecond", "kJ/s"),
            ("kilowatt", "kW"),
            ("kilowattHourPerYear", "kWh/a"),
            ("megajoulePerHour", "MJ/h"),
            ("megawatt", "MW"),
            ("microwatt", "uW"),
            ("milliwatt", "mW"),
            ("tonOfRefrigeration", "TR"),
            ("watt", "W"),
        ],
    },
    UnitType {
        semantic_types: &["Force", "Thrust"],
        units: &[
            ("newton", "N"),
            ("ounce", "ozf"),
            ("pound", "lbf"),
            ("ton", "tonf"),
        ],
    },
    UnitType {
        semantic_types: &["Frequency"],
        units: &[
            ("gigahertz", "GHz"),
            ("hertz", "Hz"),
            ("kilohertz", "kHz"),
            ("megahertz", "MHz"),
            ("millihertz", "mHz"),
        ],
    },
    UnitType {
        semantic_types: &["Illuminance"],
        units: &[("footcandle", "fc"), ("lux", "lx")],
    },
    UnitType {
        semantic_types: &["Inductance"],
        units: &[("henry", "H"), ("microhenry", "uH"), ("millihenry", "mH")],
    },
    UnitType {
        semantic_types: &["IonizingRadiationDose"],
        units: &[
            ("gray", "Gy"),
            ("microgray", "uGy"),
            ("microsievert", "uSv"),
            ("milligray", "mGy"),
            ("millisievert", "mSv"),
            ("sievert", "Sv"),
        ],
    },
    UnitType {
        semantic_types: &["Irradiance"],
        units: &[("wattPerSquareMetre", "W/m2")],
    },
    UnitType {
        semantic_types: &["Luminance"],
        units: &[("candelaPerSquareMetre", "cd/m2")],
    },
    UnitType {
        semantic_types: &["LuminousFlux"],
        units: &[("lumen", "lm")],
    },
    UnitType {
        semantic_types: &["LuminousIntensity"],
        units: &[("candela", "cd")],
    },
    UnitType {
        semantic_types: &["MagneticFlux"],
        units: &[("maxwell", "Mx"), ("weber", "Wb")],
    },
    UnitType {
        semantic_types: &["MagneticInduction"],
        units: &[("gauss", "Gs"), ("tesla", "T")],
    },
    UnitType {
        semantic_types: &["Mass"],
        units: &[
            ("gram", "g"),
            ("kilogram", "kg"),
            ("massPound", "lb"),
            ("microgram", "ug"),
            ("milligram", "mg"),
            ("slug", "slug"),
            ("tonne", "t"),
        ],
    },
    UnitType {
        semantic_types: &["MassFlowRate"],
        units: &[
            ("gramPerHour", "g/h"),
            ("gramPerSecond", "g/s"),
            ("kilogramPerHour", "kg/h"),
            ("kilogramPerSecond", "kg/s"),
            ("massPoundPerHour", "lb/h"),
        ],
    },
    UnitType {
        semantic_types: &["Pressure"],
        units: &[
            ("bar", "bar"),
            ("decapascal", "daPa"),
            ("hectopascal", "hPa"),
            ("inchesOfMercury", "inHg"),
            ("inchesOfWater", "inH2O"),
            ("kilopascal", "kPa"),
            ("millibar", "mbar"),
            ("millimetresOfMercury", "mmHg"),
            ("pascal", "Pa"),
            ("poundPerSquareInch", "psi"),
        ],
    },
    UnitType {
        semantic_types: &["Radioactivity"],
        units: &[
            ("becquerel", "Bq"),
            ("gigabecquerel", "GBq"),
            ("kilobecquerel", "kBq"),
            ("megabecquerel", "MBq"),
        ],
    },
    UnitType {
        semantic_types: &["ReactiveEnergy"],
        units: &[
            ("gigavoltAmpereReactiveHour", "Gvarh"),
            ("kilovoltAmpereReactiveHour", "kvarh"),
            ("megavoltAmpereReactiveHour", "Mvarh"),
            ("voltAmpereReactiveHour", "varh"),
        ],
    },
    UnitType {
        semantic_types: &["ReactivePower"],
        units: &[
            ("gigavoltAmpereReactive", "Gvar"),
            ("kilovoltAmpereReactive", "kvar"),
            ("megavoltAmpereReactive", "Mvar"),
            ("millivoltAmpereReactive", "mvar"),
            ("voltAmpereReactive", "var"),
        ],
    },
    UnitType {
        semantic_types: &["Resistance"],
        units: &[
            ("kiloohm", "kohm"),
            ("megaohm", "Mohm"),
            ("milliohm", "mohm"),
            ("ohm", "ohm"),
        ],
    },
    UnitType {
        semantic_types: &["SoundPressure"],
        units: &[("bel", "bel"), ("decibel", "dB")],
    },
    UnitType {
        semantic_types: &["Temperature"],
        units: &[
            ("degreeCelsius", "degC"),
            ("degreeFahrenheit", "degF"),
            ("kelvin", "K"),
        ],
    },
    UnitType {
        semantic_types: &["TimeSpan"],
        units: &[
            ("day", "d"),
            ("hour", "h"),
            ("microsecond", "us"),
            ("millisecond", "ms"),
            ("minute", "min"),
            ("nanosecond", "ns"),
            ("second", "s"),
            ("year", "a"),
        ],
    },
    UnitType {
        semantic_types: &["Torque"],
        units: &[("newtonMetre", "Nm")],
    },
    UnitType {
        semantic_types: &["Velocity"],
        units: &[
            ("centimetrePerSecond", "cm/s"),
            ("kilometrePerHour", "km/h"),
            ("kilometrePerSecond", "km/s"),
            ("knot", "kn"),
            ("metrePerHour", "m/h"),
            ("metrePerSecond", "m/s"),
            ("milePerHour", "mph"),
            ("milePerSecond", "mi/s"),
        ],
    },
    UnitType {
        semantic_types: &["Voltage"],
        units: &[
            ("kilovolt", "kV"),
            ("megavolt", "MV"),
            ("microvolt", "uV"),
            ("millivolt", "mV"),
            ("volt", "V"),
        ],
    },
    UnitType {
        semantic_types: &["Volume"],
        units: &[
            ("cubicCentimetre", "cm3"),
            ("cubicFoot", "ft3"),
            ("cubicInch", "in3"),
            ("cubicMetre", "m3"),
            ("fluidOunce", "floz"),
            ("gallon", "gal"),
            ("litre", "l"),
            ("millilitre", "ml"),
        ],
    },
    UnitType {
        semantic_types: &["VolumeFlowRate"],
        units: &[
            ("cubicFootPerMinute", "ft3/min"),
            ("cubicMetrePerHour", "m3/h"),
            ("cubicMetrePerMinute", "m3/min"),
            ("cubicMetrePerSecond", "m3/s"),
            ("gallonPerHour", "gal/h"),
            ("gallonPerMinute", "gal/min"),
            ("litrePerHour", "l/h"),
            ("litrePerMinute", "l/min"),
            ("litrePerSecond", "l/s"),
            ("millilitrePerHour", "ml/h"),
            ("millilitrePerMinute", "ml/min"),
            ("millilitrePerSecond", "ml/s"),
        ],
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_spelling_names_one_unit() {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for row in UNIT_TYPES {
            for &(dtdl, doppel) in row.units {
                if let Some(other) = seen.insert(doppel, dtdl) {
                    panic!("`{doppel}` spells both `{other}` and `{dtdl}`");
                }
            }
        }
        assert_eq!(seen.len(), 240, "the extension has 240 units");
    }

    #[test]
    fn every_semantic_type_has_one_unit_type() {
        let mut seen = HashMap::new();
        for (index, row) in UNIT_TYPES.iter().enumerate() {
            for semantic_type in row.semantic_types {
                assert_eq!(seen.insert(*semantic_type, index), None, "{semantic_type}");
            }
        }
        assert_eq!(seen.len(), 52, "the extension has 52 semantic types");
    }

    #[test]
    fn units_map_both_ways() {
        assert_eq!(doppel_unit("Temperature", "degreeCelsius"), Ok("degC"));
        assert_eq!(doppel_unit("Humidity", "gramPerCubicMetre"), Ok("g/m3"));
        assert_eq!(
            doppel_unit("Historized", "degreeCelsius"),
            Err(UnitProblem::NotSemantic)
        );
        assert!(matches!(
            doppel_unit("Temperature", "bar"),
            Err(UnitProblem::WrongUnit { .. })
        ));
        assert_eq!(
            dtdl_unit("kW"),
            Some(DtdlUnit {
                semantic_type: "Power",
                unit: "kilowatt"
            })
        );
        assert_eq!(dtdl_unit("m3/h").map(|u| u.unit), Some("cubicMetrePerHour"));
        assert_eq!(dtdl_unit("mm/s"), None);
        assert_eq!(dtdl_unit(""), None);
        for row in UNIT_TYPES {
            for (unit, spelling) in row.units {
                let back = dtdl_unit(spelling).unwrap();
                assert_eq!(back.unit, *unit);
                assert_eq!(doppel_unit(back.semantic_type, back.unit), Ok(*spelling));
            }
        }
    }
}
