//! The control core: the effective topology, changes to it, and its durable copy.
//!
//! Owns [`ControlState`]: the effective topology as a model (the file plus every change made
//! through the API) together with the [`Plan`] validated from it. It is a pure library: no HTTP,
//! no runtime, no dataplane. The HTTP layer decodes a request body into one of the request types
//! of [`change`] with [`decode`] (or many with [`decode_batch`]), applies it, hands the plan to
//! the running network, appends the change to the [`Journal`] and waits for it to be durable;
//! then it keeps the new state.
//!
//! Invariants:
//! - a change is validated exactly like a file: the edited model is serialized to TOML text and
//!   run through [`topology::parse`] under the file name [`API_FILE`], so the messages and hints
//!   are the ones `vpcd check` prints (line references into the generated text are removed).
//!   The frequent changes (instances, 1:1 EIPs, security-group rules) are first tried by
//!   `incremental`, which checks only what the change touches and accepts exactly what the
//!   whole-file path accepts, with the same plan; everything it does not accept goes through
//!   the whole-file path, so refusals are always the file validator's;
//! - `apply` never modifies `self`: on any error the old state is untouched, and on success the
//!   caller decides when the new state takes effect;
//! - [`ControlState::export`] is always text that `vpcd check` accepts and that parses to the
//!   same plan (checked when a state is built from a file).
//!
//! A caller applying changes to a running network (one at a time: the state has one writer):
//!
//! 1. `let next = state.apply(&change)?` — refusals go back to the client as 4xx;
//! 2. hand `next.shared_plan()` to the runtime (`runtime::Handle::apply`); if it refuses, keep
//!    `state` and report it;
//! 3. `let ticket = journal.append(next.generation(), &[change])?`; if that fails, put
//!    `state.plan()` back into the runtime and report it, so the running network never differs
//!    from what a restart would load;
//! 4. `state = next`; answer once `journal.durable().wait(ticket)` resolves (requests that
//!    appended meanwhile share its fsync). `journal.compact_if_due(&state)` now and then.
//!
//! `ControlState::open(dir, file)` is the start: the saved state (snapshot and journal), or the
//! file's on first use; then `Journal::open(dir)`.
//!
//! It must not know about packets, sockets or tokio.

mod batch;
pub mod change;
mod error;
mod incremental;
pub mod journal;
mod state;

use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use batch::{MAX_BATCH, decode_batch};
pub use change::Change;
pub use error::{ApiError, ChangeError, ErrorCode, decode};
pub use journal::{Durable, JOURNAL_FILE, Journal, Ticket};
pub use state::{STATE_FILE, StateError};

use toml::Spanned;

use crate::topology::cidr::Addr;
use crate::topology::model::Topology;
use crate::topology::{self, Diagnostic, Plan, TopologyError};

/// The file name validation errors of API changes carry (never shown as a location: see
/// [`ApiError`]).
pub const API_FILE: &str = "api";

/// The effective topology: the model, the plan validated from it, and a generation counter that
/// every applied change increments.
#[derive(Debug, Clone)]
pub struct ControlState {
    model: Topology,
    /// Shared with the running network while it applies it (changes copy it on write).
    plan: Arc<Plan>,
    /// The model as TOML text: what `export` returns and `save` writes. Made when first asked
    /// for: an incremental change does not serialize the topology (`Err`: the model could not
    /// be written as TOML, which `save` refuses to hide).
    text: OnceLock<Result<String, String>>,
    generation: u64,
}

/// The text is derived from the model: two states are equal when model, plan and generation
/// are, whether or not their text was made yet.
impl PartialEq for ControlState {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation && self.model == other.model && self.plan == other.plan
    }
}

impl ControlState {
    /// The state of a topology file (generation 0).
    pub fn from_file(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(&path.display().to_string(), &text)
    }

    /// The state of topology text; `file` names it in errors. Also checks that the exported
    /// text validates to the same plan, so that `export` and `save` never write a topology that
    /// does not load back.
    pub fn from_text(file: &str, text: &str) -> Result<Self, TopologyError> {
        let (model, plan) = topology::parse_model(file, text)?;
        let state = Self::from_model(file, model, 0)?;
        if *state.plan != plan {
            return Err(TopologyError::Invalid(vec![Diagnostic::new(
                file,
                text,
                None,
                "",
                "the topology does not survive export: its TOML form validates to another plan",
                Some("this is a bug in vpcd; please report it with the file".into()),
            )]));
        }
        Ok(state)
    }

    /// Serializes `model` and validates the text: the plan always comes from the exact text
    /// that `export` returns.
    ///
    /// Addresses the plan assigned are then written into the model (`ip` of every instance and
    /// NAT gateway): assignment depends on file order, so without this, adding an instance with
    /// an explicit address or removing one could renumber instances that the change does not
    /// name, and break their flows.
    fn from_model(file: &str, model: Topology, generation: u64) -> Result<Self, TopologyError> {
        let text = to_toml(&model).map_err(|e| invalid(file, e))?;
        let (mut model, plan) = topology::parse_model(file, &text)?;
        if !pin_addresses(&mut model, &plan) {
            return Ok(ControlState {
                model,
                plan: Arc::new(plan),
                text: OnceLock::from(Ok(text)),
                generation,
            });
        }
        let text = to_toml(&model).map_err(|e| invalid(file, e))?;
        let (model, pinned) = topology::parse_model(file, &text)?;
        if pinned != plan {
            return Err(invalid(
                file,
                "writing the assigned addresses into the topology changed its plan (a bug in vpcd; please report it)".into(),
            ));
        }
        Ok(ControlState {
            model,
            plan: Arc::new(plan),
            text: OnceLock::from(Ok(text)),
            generation,
        })
    }

    pub fn model(&self) -> &Topology {
        &self.model
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan, shared: what to hand the running network (`runtime::Handle::apply`) without
    /// copying it.
    pub fn shared_plan(&self) -> Arc<Plan> {
        self.plan.clone()
    }

    /// How many changes were applied since the state was created from a file.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies `change` to a copy of the model and validates the result like a file.
    ///
    /// Returns the new state (its plan is what to compile and swap in; its generation is one
    /// more) or every problem found. `self` is never modified. Instances, 1:1 EIPs and
    /// security-group rules are checked incrementally when they pass (see the module doc);
    /// the result is the one [`ControlState::apply_full`] gives.
    pub fn apply(&self, change: &Change) -> Result<ControlState, ChangeError> {
        let mut next = self.clone();
        next.apply_in_place(change)?;
        Ok(next)
    }

    /// Applies `change` to `self`, one generation more. On `Err`, `self` may be partly edited:
    /// callers apply to a copy they throw away on error ([`ControlState::apply`], batches).
    fn apply_in_place(&mut self, change: &Change) -> Result<(), ChangeError> {
        let scope = change.edit(&mut self.model).map_err(ChangeError::one)?;
        if incremental::apply(Arc::make_mut(&mut self.plan), &mut self.model, change).is_some() {
            self.text = OnceLock::new();
            self.generation += 1;
            return Ok(());
        }
        *self = Self::from_model(API_FILE, self.model.clone(), self.generation + 1)
            .map_err(|e| ChangeError::from_topology(&e, scope.as_deref()))?;
        Ok(())
    }

    /// [`ControlState::apply`] through the whole-file path only: the edited model serialized
    /// and validated like a file. What `apply` falls back to; public so that tests can compare
    /// the two paths.
    pub fn apply_full(&self, change: &Change) -> Result<ControlState, ChangeError> {
        let mut model = self.model.clone();
        let scope = change.edit(&mut model).map_err(ChangeError::one)?;
        Self::from_model(API_FILE, model, self.generation + 1)
            .map_err(|e| ChangeError::from_topology(&e, scope.as_deref()))
    }

    /// The current topology as a TOML file that `vpcd check` accepts. Comments and layout of the
    /// original file are not kept; probes are; every instance and NAT gateway has its address
    /// written out. Should the model not serialize (a bug: every model here came from valid
    /// TOML and typed requests), a TOML comment saying so, which [`ControlState::save`] refuses
    /// to write.
    pub fn export(&self) -> &str {
        match self.text() {
            Ok(t) => t,
            Err(e) => e,
        }
    }

    /// The exported text, made on first use.
    fn text(&self) -> Result<&str, &str> {
        match self.text.get_or_init(|| {
            to_toml(&self.model).map_err(|e| format!("# {e} (a bug in vpcd; please report it)\n"))
        }) {
            Ok(t) => Ok(t),
            Err(e) => Err(e),
        }
    }
}

fn invalid(file: &str, message: String) -> TopologyError {
    TopologyError::Invalid(vec![Diagnostic::new(file, "", None, "", message, None)])
}

/// Writes the plan's addresses into instances and NAT gateways that have no `ip`; true when it
/// changed something.
fn pin_addresses(model: &mut Topology, plan: &Plan) -> bool {
    let mut changed = false;
    for (vpc, vp) in model.vpc.iter_mut().zip(&plan.vpcs) {
        for inst in vpc.instance.iter_mut().filter(|i| i.ip.is_none()) {
            if let Some(p) = vp.instances.iter().find(|p| &p.name == inst.name.get_ref()) {
                Arc::make_mut(inst).ip = Some(Spanned::new(0..0, Addr(p.ip)));
                changed = true;
            }
        }
        for gw in vpc.nat_gateway.iter_mut().filter(|g| g.ip.is_none()) {
            if let Some(p) = vp
                .nat_gateways
                .iter()
                .find(|p| &p.name == gw.name.get_ref())
            {
                gw.ip = Some(Spanned::new(0..0, Addr(p.ip)));
                changed = true;
            }
        }
    }
    changed
}

fn to_toml(model: &Topology) -> Result<String, String> {
    toml::to_string(model).map_err(|e| format!("cannot write the topology as TOML: {e}"))
}
