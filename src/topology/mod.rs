//! Topology files: the serde model (`model`), validation with located errors (`validate`,
//! `diagnostic`) and the resolved addressing plan (`plan`).
//!
//! Owns everything between the TOML text and a `Plan`. It must not know about packets: the
//! dataplane reads compiled `tables`, never this model.

pub mod cidr;
pub mod compile;
mod diagnostic;
pub mod model;
pub mod plan;
mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, TopologyError};
pub use plan::Plan;
pub(crate) use validate::{first_host, is_valid_name, last_host, reserved_role};

/// Reads, parses and validates a topology file.
pub fn load(path: &Path) -> Result<Plan, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates topology text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Plan, TopologyError> {
    validate::parse_and_validate(file, text)
}

/// Like [`parse`], and also returns the model it validated (what `control` edits and saves).
pub fn parse_model(file: &str, text: &str) -> Result<(model::Topology, Plan), TopologyError> {
    let plan = parse(file, text)?;
    // The text passed stage 2 of `parse`, so this cannot fail; map the error all the same.
    let model = toml::from_str(text).map_err(|e: toml::de::Error| {
        TopologyError::Invalid(vec![Diagnostic::new(
            file,
            text,
            e.span(),
            "",
            e.message().trim(),
            None,
        )])
    })?;
    Ok((model, plan))
}
