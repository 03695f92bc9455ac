//! Standard models.

use doppel_runtime::Components;

/// Registers every standard model kind.
pub fn register(components: &mut Components) {
    let _ = components;
}
