//! Which digest function a CAS, action-cache or Execute request uses. The
//! faithful server serves every function the harness computes except GITSHA1
//! (left unadvertised so a request naming it can be refused), in its cache
//! and for execution alike.

use reapi_client::digest_function::Function;
use tonic::Status;

use super::defects::Defect;
use super::Shared;

/// What the cache advertises and serves when faithful: every function the
/// harness computes but GITSHA1, which stays unadvertised so that
/// `digest-functions.unadvertised-refused` has one to be refused.
const CACHE_FUNCTIONS: &[Function] = &[
    Function::Sha256,
    Function::Sha1,
    Function::Md5,
    Function::Sha384,
    Function::Sha512,
    Function::Blake3,
    Function::Sha256Tree,
];

/// The functions whose hash length alone names them (the spec's "MAY leave
/// this field unset" list, less MURMUR3 and VSO, which are not served).
const INFERRED_BY_LENGTH: &[Function] =
    &[Function::Md5, Function::Sha1, Function::Sha256, Function::Sha384, Function::Sha512];

impl Shared {
    /// The digest functions of the cache capabilities.
    pub(crate) fn cache_functions(&self) -> &'static [Function] {
        if self.defects.has(Defect::Sha256Only) {
            &[Function::Sha256]
        } else {
            CACHE_FUNCTIONS
        }
    }

    /// The function of a request whose `digest_function` is `value` and whose
    /// first digest's hash is `hash` (if any): the one it names, or for
    /// UNKNOWN the advertised one its hash length names (SHA-256 when none
    /// does). A function the cache does not serve is INVALID_ARGUMENT.
    pub(crate) fn request_function(&self, value: i32, hash: Option<&str>) -> Result<Function, Status> {
        if self.defects.has(Defect::DigestFunctionFromLength) {
            // A server that predates the request field: the hash length decides.
            return Ok(by_length(INFERRED_BY_LENGTH, hash));
        }
        if value == 0 {
            let advertised: Vec<Function> =
                INFERRED_BY_LENGTH.iter().copied().filter(|f| self.cache_functions().contains(f)).collect();
            return Ok(by_length(&advertised, hash));
        }
        self.served_function(value)
    }

    /// The function of an Execute request: as for the cache (execution
    /// serves the same functions), but a function it does not advertise is
    /// refused even with `unadvertised-function-accepted`, which is the CAS's.
    pub(crate) fn exec_function(&self, value: i32, hash: Option<&str>) -> Result<Function, Status> {
        let f = self.request_function(value, hash)?;
        if self.cache_functions().contains(&f) {
            Ok(f)
        } else {
            Err(Status::invalid_argument(format!("digest function {} is not supported for execution", f.name())))
        }
    }

    /// `value` if the cache serves it; INVALID_ARGUMENT otherwise.
    pub(crate) fn served_function(&self, value: i32) -> Result<Function, Status> {
        let served =
            |f: &Function| self.cache_functions().contains(f) || self.defects.has(Defect::UnadvertisedFunctionAccepted);
        Function::from_value(value).filter(served).ok_or_else(|| {
            Status::invalid_argument(format!(
                "digest function {} is not supported here",
                reapi_client::digest_function::name_of(value)
            ))
        })
    }
}

fn by_length(candidates: &[Function], hash: Option<&str>) -> Function {
    hash.and_then(|h| candidates.iter().copied().find(|f| f.hex_len() == h.len())).unwrap_or(Function::Sha256)
}
