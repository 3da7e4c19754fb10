//! What every lease task shares, apart from the session that hands leases
//! out: so the ways of running an action depend on this, not on the session.

use super::lease_cas::LeaseCas;
use super::WorkerConfig;

/// Everything a lease task needs.
pub(super) struct Ctx {
    pub config: WorkerConfig,
    pub cas: LeaseCas,
}
