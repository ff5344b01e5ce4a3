//! The canonical formatter (`lbp fmt`). Not written yet.

use crate::Diagnostic;

/// Format a policy source canonically. Refuses (returns the diagnostics) when the
/// source has syntax errors.
pub fn format_source(src: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = crate::parse::parse(src);
    if !parsed.diagnostics.is_empty() {
        return Err(parsed.diagnostics);
    }
    Ok(src.to_string())
}
