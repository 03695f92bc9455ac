//! Writing TOML by hand, for the commands that propose config files (`doppel types
//! import-dtdl`, `doppel opcua browse`): keys, strings and floats that `toml` reads
//! back exactly, and comment lines.

/// A TOML key: bare when it can be, quoted otherwise.
pub fn key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        string(key)
    }
}

/// A TOML basic string.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A finite float as a TOML float. Debug formatting keeps a decimal point or an
/// exponent (`1200.0`, `-1.7976931348623157e308`), which TOML needs to read a float.
pub fn float(value: f64) -> String {
    debug_assert!(value.is_finite(), "only finite numbers are written");
    format!("{value:?}")
}

/// `text` made fit for one comment line: control characters become spaces.
pub fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_floats_read_back_exactly() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let document = format!(
            "key = {}\nfloats = [{}, {}, {}, {}]\n",
            string(text),
            float(-f64::MAX),
            float(f64::from(f32::MAX)),
            float(1200.0),
            float(-2147483648.0)
        );
        let table: toml::Table =
            toml::from_str(&document).unwrap_or_else(|error| panic!("{error}\n{document}"));
        assert_eq!(table["key"].as_str(), Some(text));
        let floats: Vec<f64> = table["floats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_float().unwrap())
            .collect();
        assert_eq!(
            floats,
            [-f64::MAX, f64::from(f32::MAX), 1200.0, -2147483648.0]
        );
    }

    #[test]
    fn keys_are_bare_where_they_can_be_and_comments_one_line() {
        assert_eq!(key("thermostat1_temperature"), "thermostat1_temperature");
        assert_eq!(key("a.b"), "\"a.b\"");
        assert_eq!(key(""), "\"\"");
        assert_eq!(comment("a\nb"), "a b");
    }
}
