//! CEL filters as the configuration checks them: compiled at load, naming only the variables
//! of their source kind. The router evaluates them (`router::filter`).

use cel::Program;

/// Variables of change events.
pub const CHANGE_VARS: &[&str] = &["op", "before", "after", "source"];
/// Variables of webhook events.
pub const WEBHOOK_VARS: &[&str] = &["type", "id", "data", "headers"];

/// Compiles `expr` and checks that it only names variables of its source kind.
pub fn compile(expr: &str, change: bool) -> Result<Program, String> {
    let program = Program::compile(expr).map_err(|e| e.to_string())?;
    let allowed = if change { CHANGE_VARS } else { WEBHOOK_VARS };
    for v in program.references().variables() {
        if !allowed.contains(&v) {
            return Err(format!(
                "`{v}` is not a field of {} events (they have {})",
                if change { "change" } else { "webhook" },
                allowed.join(", ")
            ));
        }
    }
    Ok(program)
}

/// Checks that `expr` compiles for `change` events (or webhook events) without keeping it.
pub fn check(expr: &str, change: bool) -> Result<(), String> {
    compile(expr, change).map(|_| ())
}
