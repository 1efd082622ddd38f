//! Control plane: API server, store, scheduler and controllers.
pub mod apiserver;
pub mod controllers;
pub mod store;
