//! A small, infallible YAML writer for rule files.
//!
//! The shape is fixed (groups → rules → string maps), so writing it directly keeps the output
//! stable and readable: multi-line strings (expressions) become `|-` block scalars, every other
//! string a double-quoted scalar with JSON-compatible escapes.

use std::fmt::Write as _;

use super::RuleGroup;

/// Header of generated files.
pub(super) const GENERATED_HEADER: &str = "# Generated from service/monitoring (flashcard_monitoring). Do not edit by hand:\n# run `cargo xtask generate`.\n";

pub(super) fn rules_file(groups: &[RuleGroup]) -> String {
    let mut out = String::from(GENERATED_HEADER);
    out.push_str("groups:\n");
    for group in groups {
        let _ = writeln!(out, "  - name: {}", scalar(&group.name, 6));
        out.push_str("    rules:\n");
        for rule in &group.rules {
            let _ = writeln!(out, "      - alert: {}", scalar(&rule.alert, 10));
            let _ = writeln!(out, "        expr: {}", scalar(&rule.expr, 10));
            let _ = writeln!(out, "        for: {}", scalar(&rule.for_, 10));
            for (key, map) in [("labels", &rule.labels), ("annotations", &rule.annotations)] {
                if map.is_empty() {
                    let _ = writeln!(out, "        {key}: {{}}");
                    continue;
                }
                let _ = writeln!(out, "        {key}:");
                for (k, v) in map {
                    let _ = writeln!(out, "          {}: {}", scalar(k, 12), scalar(v, 12));
                }
            }
        }
    }
    out
}

/// A YAML scalar for `s`; block scalars are indented by `indent` spaces.
fn scalar(s: &str, indent: usize) -> String {
    let block_ok = s.contains('\n')
        && !s.starts_with([' ', '\t'])
        && s.lines().all(|l| l == l.trim_end())
        && !s.ends_with('\n')
        && s.chars().all(|c| c == '\n' || !c.is_control());
    if block_ok {
        let pad = " ".repeat(indent);
        let mut out = String::from("|-");
        for line in s.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
                out.push_str(line);
            }
        }
        return out;
    }
    if is_plain_safe(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Whether `s` can be written as a plain scalar and still read back as the same string.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "inf" | "nan"
        )
}

/// A double-quoted scalar (JSON string escapes are valid YAML).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quoted(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(scalar("x\ny", 4), "|-\n    x\n    y");
        assert_eq!(scalar("x\n y ", 4), "\"x\\n y \"");
        assert_eq!(scalar("5m", 4), "5m");
        assert_eq!(scalar("severity", 4), "severity");
        assert_eq!(scalar("10", 4), "\"10\"");
        assert_eq!(scalar("true", 4), "\"true\"");
        assert_eq!(scalar("a b", 4), "\"a b\"");
    }
}
