//! svcca-storage: reading activations from `.npy` files (module [`npy`]); Arrow IPC datasets,
//! manifests and object stores are being built (issue 4).

pub mod npy;
