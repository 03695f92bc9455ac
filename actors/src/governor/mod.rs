//! Standard governors.

use doppel_runtime::Components;

/// Registers every standard governor kind.
pub fn register(components: &mut Components) {
    let _ = components;
}
