//! The named defects. Each one is a single switch that makes the server get
//! exactly one requirement wrong; the faithful server has none switched on.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// What a defect stands for in the kill matrix: its row says it, so the
/// matrix reads it instead of keeping lists of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A requirement broken: some check's `killed_by` names it and FAILs (or
    /// WARNs) on it.
    Finding,
    /// The server unusable rather than wrong (hangs, garbage, transient
    /// answers): every check is ERROR or unchanged, never FAIL.
    Fault,
    /// A behaviour real servers have that BuildStream does not mind: checks
    /// PASS or SKIP with it, never FAIL.
    Benign,
}

macro_rules! defects {
    (@role) => { Role::Finding };
    (@role $role:ident) => { Role::$role };
    ($($(#[$meta:meta])* $variant:ident = $name:literal $(as $role:ident)? : $describe:literal,)*) => {
        /// One way the server can be wrong. See [`Defect::describe`].
        // The descriptions are plain text (`argv[0]` is no link).
        #[allow(rustdoc::broken_intra_doc_links)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Defect {
            // Each variant's doc is its row's description.
            $($(#[$meta])* #[doc = $describe] $variant,)*
        }

        impl Defect {
            /// Every defect, in a stable order.
            pub const ALL: &'static [Defect] = &[$(Defect::$variant,)*];

            /// Stable kebab-case name, e.g. `input-root-as-subdir`.
            pub fn name(self) -> &'static str {
                match self { $(Defect::$variant => $name,)* }
            }

            /// One line: what the server gets wrong with this defect.
            pub fn describe(self) -> &'static str {
                match self { $(Defect::$variant => $describe,)* }
            }

            /// What it stands for in the kill matrix (`as Fault`, `as Benign`
            /// on its row; a finding otherwise).
            pub fn role(self) -> Role {
                match self { $(Defect::$variant => defects!(@role $($role)?),)* }
            }
        }
    };
}

defects! {
    // --- sandbox ---
    InputRootAsSubdir = "input-root-as-subdir":
        "runs the command in the staged input root as a subdirectory of the worker's own filesystem instead of chrooting into it",
    EtcFilesInjected = "etc-files-injected":
        "binds the worker host's /etc/hosts and /etc/resolv.conf into the input root's /etc, as container runtimes do",
    HostUsrBound = "host-usr-bound":
        "binds the worker host's /usr read-only over the input root's /usr",
    NoProc = "no-proc":
        "mounts no procfs on /proc",
    ProcSharedPidNs = "proc-shared-pid-ns":
        "mounts /proc without giving the action its own PID namespace, so host processes are visible",
    ProcWorkerPidNs = "proc-worker-pid-ns":
        "runs every action in one small PID namespace the worker holds, as a worker container does: /proc shows the worker's and other actions' processes, far fewer than a host's",
    DevMissingNodes = "dev-missing-nodes":
        "gives /dev only a null node (no full, random, urandom, zero)",
    NoDevShm = "no-dev-shm":
        "gives /dev only its device nodes, as a chroot with mknod'ed nodes does: no /dev/shm, no /dev/fd or /dev/std* links",
    SharedNetwork = "shared-network":
        "does not unshare the network namespace, so the host's interfaces are visible",
    NonRootUid = "non-root-uid":
        "runs commands as uid 1000 / gid 1000 instead of 0 / 0",
    WorkerEnvLeak = "worker-env-leak":
        "adds the worker's own environment (HOME=/root, WORKER_NAME=defect-server, ...) to the command's",
    Argv0WorkerPath = "argv0-worker-path":
        "resolves argv[0] with the worker's PATH (/usr/local/bin:/usr/bin:/bin), which the command then also sees, instead of the Command's PATH",
    Argv0RelativeToRoot = "argv0-relative-to-root":
        "resolves a relative argv[0] that holds a separator against the input root, as REAPI v2.2 said, although it advertises a later version (v2.3 says the working directory)",
    SymlinksDropped = "symlinks-dropped":
        "does not stage the input root's symlinks",
    ExecBitsDropped = "exec-bits-dropped":
        "stages every input file without its executable bit",
    EmptyDirsDropped = "empty-dirs-dropped":
        "does not stage empty directories of the input root",
    SubtreeReadOnlyIgnored = "subtree-read-only-ignored":
        "ignores the SubtreeReadOnly directory property: the whole input root is writable",
    MtimeIgnored = "mtime-ignored":
        "ignores mtime node properties: input files get the staging time, outputs carry no mtime",
    ConstantOutputMtime = "constant-output-mtime":
        "reports the same mtime on every output file, whatever the file's own",
    TmpSharedSerial = "tmp-shared-serial":
        "runs one action at a time, each with the same worker directory as /tmp, never cleaned between actions",
    TmpNotWritable = "tmp-not-writable":
        "mounts /tmp read-only",
    RunnerExecsEnv = "runner-execs-env" as Benign:
        "starts every command as `/usr/bin/env -- argv...` inside the input root, as Buildbarn's chroot runner does (benign: every BuildStream root has /usr/bin/env)",
    // --- platform ---
    PlatformIgnored = "platform-ignored":
        "ignores platform properties entirely: unknown names accepted and values never matched",
    UnknownKeysAccepted = "unknown-keys-accepted":
        "silently ignores unknown platform property names (values of known names are still matched)",
    IsaNamedDifferently = "isa-named-differently":
        "names the worker's ISA as uname does (x86_64), not as BuildStream does (x86-64), and refuses unmatched platforms at once",
    IsaMismatchExecuted = "isa-mismatch-executed":
        "does not match the ISA value, so actions for another ISA run here",
    ForeignIsaLateDispatch = "foreign-isa-late-dispatch":
        "keeps every action queued for a second, then runs it here whatever its ISA, as a mislabelled or emulating worker that picks foreign actions up late",
    PlatformFromCommandOnly = "platform-from-command-only":
        "reads platform properties from the Command only, ignoring Action.platform",
    PlatformFromActionOnly = "platform-from-action-only":
        "reads platform properties from the Action only, ignoring Command.platform",
    UnmatchedPlatformQueued = "unmatched-platform-queued":
        "keeps an action for a platform no worker has queued for ever instead of answering FAILED_PRECONDITION, as BuildGrid does by default",
    ExactPlatformMatch = "exact-platform-match":
        "reads the platform from the Action only and needs it to equal a worker's exactly, as Buildbarn does: a platform given on the Command alone matches no worker",
    SchedulerIgnoresPlatform = "scheduler-ignores-platform":
        "hands any queued action to any bot of the Remote Workers API, whatever the bot's platform properties",
    UnsortedEnvRejected = "unsorted-env-rejected":
        "rejects Execute with INVALID_ARGUMENT when environment variables are not sorted by name",
    // --- outputs ---
    OutputsDroppedOnFailure = "outputs-dropped-on-failure":
        "uploads no outputs, stdout or stderr when the command exits non-zero",
    LogsDroppedOnFailure = "logs-dropped-on-failure":
        "uploads the outputs but empty stdout and stderr when the command exits non-zero",
    EscapingOutputPathsRefused = "escaping-output-paths-refused":
        "refuses (INVALID_ARGUMENT in ExecuteResponse.status) output paths that leave the working directory",
    OutputFilesForDirs = "output-files-for-dirs":
        "returns output directories as output_files entries",
    NoRootDirectoryDigest = "no-root-directory-digest":
        "leaves OutputDirectory.root_directory_digest unset (tree_digest only)",
    TreeRootMismatch = "tree-root-mismatch":
        "gives an output directory a tree_digest whose Tree root is not the directory root_directory_digest names",
    StdoutTruncated = "stdout-truncated":
        "keeps only the first half of stdout",
    LegacyKindMismatchIgnored = "legacy-kind-mismatch-ignored":
        "leaves out a directory named in the deprecated output_files (or a file in output_directories) instead of answering FAILED_PRECONDITION",
    OutputSymlinksFollowed = "output-symlinks-followed":
        "follows a symlink named in output_paths and returns what it points to as an output file, instead of an output_symlinks entry",
    // --- protocol ---
    StreamOpenAfterDone = "stream-open-after-done":
        "keeps the Execute stream open after sending the done Operation, until the client hangs up",
    OperationError = "operation-error":
        "finishes operations with Operation.error instead of Operation.response",
    StreamClosedEarly = "stream-closed-early":
        "ends the Execute stream before the operation is done, and answers WaitExecution with UNIMPLEMENTED",
    WrongStatusCodes = "wrong-status-codes":
        "answers INTERNAL for a missing input (instead of FAILED_PRECONDITION) and for an action cache miss (instead of NOT_FOUND)",
    SizeNotChecked = "size-not-checked":
        "accepts a BatchUpdateBlobs blob whose hash matches its data whatever size the digest claims",
    EmptyBlobBytestreamMissing = "empty-blob-bytestream-missing":
        "answers a ByteStream read of the empty blob with NOT_FOUND unless it was uploaded (batch reads are fine)",
    BytestreamAcceptsMismatch = "bytestream-accepts-mismatch":
        "stores a ByteStream upload without checking its data against the digest in the resource name",
    FindMissingNone = "find-missing-none":
        "answers FindMissingBlobs with an empty list, as a caching proxy that assumes its backend has every blob",
    BatchReadAllOrNothing = "batch-read-all-or-nothing":
        "fails a whole BatchReadBlobs with NOT_FOUND when one of its blobs is missing, instead of per-blob statuses",
    ReadLimitIgnored = "read-limit-ignored":
        "ignores ByteStream read_limit and sends everything from read_offset to the end",
    NegativeOffsetFromStart = "negative-offset-from-start":
        "treats a negative ByteStream read_offset as 0 instead of answering OUT_OF_RANGE",
    ExecDigestFunctionUnset = "exec-digest-function-unset":
        "leaves the legacy ExecutionCapabilities.digest_function UNKNOWN, naming SHA-256 only in digest_functions",
    ApiVersionsUnset = "api-versions-unset":
        "leaves low_api_version and high_api_version unset in its capabilities",
    UnknownNodePropertiesIgnored = "unknown-node-properties-ignored":
        "accepts output node properties it does not know and silently returns nothing for them",
    WaitUnknownInvalid = "wait-unknown-invalid":
        "answers WaitExecution for an operation it does not know with INVALID_ARGUMENT instead of NOT_FOUND",
    OperationNamesRouted = "operation-names-routed" as Benign:
        "answers WaitExecution of a name not in its own form (`operations/<uuid>`) with INVALID_ARGUMENT, as Buildbarn does (benign: only names it could have given are unknown operations; those get NOT_FOUND)",
    LogsInlinedUnasked = "logs-inlined-unasked":
        "inlines small stdout and stderr in every ActionResult (stdout_raw, stderr_raw) although no client asked",
    OutputParentsNotCreated = "output-parents-not-created":
        "does not create the directories leading up to output paths before the command runs",
    LegacyOutputsIgnored = "legacy-outputs-ignored":
        "collects only output_paths: a Command with the deprecated output_files and output_directories gets no outputs",
    LegacyOutputsMerged = "legacy-outputs-merged":
        "collects the deprecated output_files and output_directories even when output_paths is set",
    TreeDigestOmitted = "tree-digest-omitted":
        "gives output directories root_directory_digest only, whatever output_directory_format asks (no Tree for TREE_ONLY)",
    DoneWhileExecuting = "done-while-executing":
        "sends the final, done Operation with its metadata still at stage EXECUTING",
    MetadataWithoutDigest = "metadata-without-digest":
        "sends ExecuteOperationMetadata without the action_digest of the action it is about",
    AcUpdateDropped = "ac-update-dropped":
        "answers UpdateActionResult with OK but does not store the result",
    AcFailingUpdatesDropped = "ac-failing-updates-dropped":
        "answers UpdateActionResult with OK but stores only results with exit code 0, as Buildfarm's NodeInstance.putActionResult does",
    AcHitBlobsEvicted = "ac-hit-blobs-evicted":
        "evicts the stdout blob of a cached result from the CAS while the action cache keeps serving the result",
    MissingCommandInternal = "missing-command-internal":
        "answers an Action whose Command blob is not in the CAS with INTERNAL instead of FAILED_PRECONDITION",
    DoNotCacheIgnored = "do-not-cache-ignored":
        "caches the results of actions marked do_not_cache",
    AcNeverOverwrites = "ac-never-overwrites":
        "keeps the first action cache entry of an action: a re-execution with skip_cache_lookup does not replace it",
    CacheIgnoresSkipLookup = "cache-ignores-skip-lookup":
        "serves a cached result even when skip_cache_lookup is set",
    ExecuteUnavailable = "execute-unavailable" as Fault:
        "answers every Execute with UNAVAILABLE, retried or not, as a front end does whose backend scheduler is gone (a fault: ERROR, never FAIL)",
    CachedResultUnflagged = "cached-result-unflagged":
        "always answers from the action cache when it can, skip_cache_lookup or not, and never sets cached_result on a hit",
    MissingBlobNotReported = "missing-blob-not-reported":
        "runs actions with missing input blobs, treating them as empty",
    IdleStreamReset = "idle-stream-reset":
        "ends an Execute or WaitExecution stream with INTERNAL after 1 s without an update, as a proxy resetting idle HTTP/2 streams",
    CachesFailingResults = "caches-failing-results":
        "puts results of commands that exited non-zero in the action cache and serves them on the next Execute",
    CachesNonOk = "caches-non-ok":
        "puts results whose ExecuteResponse status is not OK (e.g. DEADLINE_EXCEEDED) in the action cache",
    TimeoutPadded = "timeout-padded":
        "enforces Action.timeout only some seconds late (Buildfarm's worker pads every timeout by 10 s), so a command a little over its timeout completes",
    TimeoutIgnored = "timeout-ignored":
        "ignores Action.timeout, letting commands run to completion",
    CancelIgnored = "cancel-ignored":
        "answers CancelOperation with OK and lets the operation run on",
    CancelHangs = "cancel-hangs" as Fault:
        "never answers CancelOperation (a fault: an interrupted run must not wait for it)",
    CancelUnimplementedWrongly = "cancel-unimplemented-wrongly":
        "answers CancelOperation with INTERNAL",
    // --- CAS ---
    GetTreePageSizeIgnored = "get-tree-page-size-ignored":
        "answers GetTree in one page of up to 1000 directories, whatever page_size asks",
    GetTreeTokenRestarts = "get-tree-token-restarts":
        "ignores GetTree's page_token and streams the tree from its first page again",
    GetTreeNoPageTokens = "get-tree-no-page-tokens":
        "pages GetTree by page_size but leaves next_page_token empty on every page",
    GetTreePartialNotFound = "get-tree-partial-not-found":
        "answers GetTree of a tree with a missing subdirectory with NOT_FOUND instead of the part present",
    WriteExistingAlreadyExists = "write-existing-already-exists":
        "answers a ByteStream upload of a blob it already holds with ALREADY_EXISTS",
    AbsoluteSymlinksRefused = "absolute-symlinks-refused":
        "advertises symlink_absolute_path_strategy ALLOWED but fails actions whose input root holds an absolute symlink with INVALID_ARGUMENT",
    ResumeOffsetRefused = "resume-offset-refused":
        "reports an interrupted upload's progress in QueryWriteStatus but refuses a Write that resumes at that offset",
    BatchLimitOverstated = "batch-limit-overstated":
        "advertises max_batch_total_size_bytes of 4 MiB with a gRPC message limit of 4 MiB, so a batch as large as advertised is refused",
    RequeueLoop = "requeue-loop":
        "when an action leaves an output symlink, fails uploading its outputs, queues the operation again (EXECUTING, CACHE_CHECK, QUEUED, EXECUTING) and never finishes the next attempt, as Buildfarm does when its worker throws while uploading outputs",
    LinkedInputDirsRequeueLoop = "linked-input-dirs-requeue-loop":
        "requeues for ever (as requeue-loop) an action that names the input root or one of its top-level directories as an output path, as Buildfarm's worker with its defaults does: it stages those directories as links into its cache (linkInputDirectories) and, with createSymlinkOutputs false, reads such a link as a file while uploading outputs (\"Is a directory\")",
    BatchLimitReset = "batch-limit-reset":
        "advertises max_batch_total_size_bytes of 4 MiB but, as Buildfarm with gRPC's default 4 MiB inbound limit, answers a batch that large with RESOURCE_EXHAUSTED (the status gRPC-Java's limit sends, often lost to a stream reset) while smaller batches go through",
    HalfClosedWriteUnanswered = "half-closed-write-unanswered":
        "never answers a ByteStream Write stream the client closes without finish_write, as Buildfarm does (the spec says the service responds when the client closes the request channel)",
    EmptyBlobMissing = "empty-blob-missing":
        "reports the empty blob missing from FindMissingBlobs until someone uploads it",
    BatchAcceptsMismatch = "batch-accepts-mismatch":
        "stores BatchUpdateBlobs data under the digest given without verifying it",
    BytestreamOffsetIgnored = "bytestream-offset-ignored":
        "answers a ByteStream.Read whose read_offset is past the end with no data instead of OUT_OF_RANGE",
    QueryWriteStatusWrong = "query-write-status-wrong":
        "answers QueryWriteStatus for an unknown upload with committed_size 0 instead of NOT_FOUND",
    WorkingDirOutputEmptyPath = "working-dir-output-empty-path" as Benign:
        "reports the output directory `.` with the path \"\", as Buildfarm does (benign: REAPI allows \"\" for the working directory, and BuildStream places an output directory at normpath(working directory / path), the same place)",
    GetTreeUnimplemented = "get-tree-unimplemented" as Benign:
        "answers GetTree with UNIMPLEMENTED, as Buildbarn does (benign: the spec does not require GetTree and BuildStream fetches trees through buildbox-casd)",
    GetTreeMissingRootEmpty = "get-tree-missing-root-empty":
        "answers GetTree of a root that is not in the CAS with an empty page instead of NOT_FOUND",
    BlobSizeLimitUnenforced = "blob-size-limit-unenforced":
        "advertises max_cas_blob_size_bytes (16 MiB) but stores a ByteStream upload larger than that",
    CompressedReadUncompressed = "compressed-read-uncompressed":
        "answers a compressed-blobs read with the blob's uncompressed bytes, ignoring the compressor it names",
    CompressedUploadUnverified = "compressed-upload-unverified":
        "stores a compressed-blobs upload under the digest of its resource name without checking what the data decompresses to",
    CompressedReadLimitHonoured = "compressed-read-limit-honoured":
        "applies a compressed-blobs read's read_limit to the compressed bytes instead of refusing it with INVALID_ARGUMENT",
    CompressedOffsetOnCompressed = "compressed-offset-on-compressed":
        "applies a compressed-blobs read's read_offset to the compressed bytes instead of the uncompressed blob",
    CompressedExistingSize = "compressed-existing-size":
        "answers a compressed upload of a blob the CAS holds early with committed_size the blob's uncompressed size instead of -1",
    BatchCompressorUnacceptable = "batch-compressor-unacceptable":
        "answers BatchReadBlobs in ZSTD whatever acceptable_compressors the client listed",
    NoCompression = "no-compression" as Benign:
        "advertises no compressor and serves no compressed-blobs, as buildbox-casd and BuildGrid 0.4.4 do (benign: compression is optional)",
    QueryWriteStatusUnimplemented = "query-write-status-unimplemented" as Benign:
        "answers ByteStream.QueryWriteStatus with UNIMPLEMENTED, as buildbox-casd and Buildbarn do (benign: BuildStream never resumes uploads)",
    // --- digest functions (the faithful server serves SHA-256, SHA-1, MD5, SHA-384, SHA-512, BLAKE3, SHA256TREE) ---
    DigestFunctionFromLength = "digest-function-from-length":
        "ignores the digest_function of CAS requests and infers the function from the hash length, as a server predating the field does: a BLAKE3 digest is taken for SHA-256",
    UnadvertisedFunctionAccepted = "unadvertised-function-accepted":
        "serves CAS requests naming a digest function it does not advertise (GITSHA1) instead of answering INVALID_ARGUMENT",
    BytestreamFunctionSegmentIgnored = "bytestream-function-segment-ignored":
        "skips the digest-function segment of ByteStream resource names (`blobs/blake3/{hash}/{size}`) and treats the blob as SHA-256",
    AcSha256Only = "ac-sha256-only":
        "checks action-cache digests as SHA-256 whatever digest_function says, so a SHA-384 or SHA-512 action digest is INVALID_ARGUMENT although the cache advertises those functions",
    OutputsDigestedSha256 = "outputs-digested-sha256":
        "runs an action whose digests use another advertised function (BLAKE3, SHA-512, ...) but digests its outputs, stdout and stderr with SHA-256",
    Sha256Only = "sha256-only" as Benign:
        "advertises and serves SHA-256 only, and no blob splitting or splicing, as buildbox-casd and BuildGrid do (benign: the other functions are optional)",
    // --- split and splice (advertised by the faithful server; fixed-size chunks) ---
    SplitChunksIncomplete = "split-chunks-incomplete":
        "answers SplitBlob with a chunk list that leaves out the blob's last chunk, so the chunks do not concatenate to the blob",
    FastcdcLevel1 = "fastcdc-level-1":
        "splits with FastCDC 2020 at the advertised average and seed but normalization level 1, where the spec says 2, so its chunk boundaries are not the ones clients compute",
    SplitUnknownEmpty = "split-unknown-empty":
        "answers SplitBlob of a blob it does not hold with an empty chunk list instead of NOT_FOUND",
    SpliceNotStored = "splice-not-stored":
        "answers SpliceBlob OK after checking the chunks but never stores the assembled blob, so it cannot be read",
    SpliceAcceptsMismatch = "splice-accepts-mismatch":
        "stores a SpliceBlob under the client's blob_digest without checking that the concatenated chunks have that digest",
    // --- faults ---
    Hang = "hang" as Fault:
        "accepts every RPC and never answers",
    Slow = "slow" as Fault:
        "answers every RPC only after 2 seconds",
    StreamCut = "stream-cut" as Fault:
        "cuts the connection after the first Execute message, without a gRPC status",
    Garbage = "garbage" as Fault:
        "finishes operations with a response Any typed as ExecuteResponse but holding random bytes",
    ExecutesNothing = "executes-nothing" as Fault:
        "refuses every Execute with FAILED_PRECONDITION, whatever the platform: a cluster with no usable worker",
    WrongDigests = "wrong-digests" as Fault:
        "returns blob data that does not match the digest from BatchReadBlobs and ByteStream.Read",
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a name that is no defect's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDefect(pub String);

impl fmt::Display for UnknownDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown defect {:?}", self.0)
    }
}

impl std::error::Error for UnknownDefect {}

impl FromStr for Defect {
    type Err = UnknownDefect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Defect::ALL.iter().copied().find(|d| d.name() == s).ok_or_else(|| UnknownDefect(s.to_string()))
    }
}

/// The defects one server instance has switched on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defects(HashSet<Defect>);

impl Defects {
    pub(crate) fn new(defects: &[Defect]) -> Defects {
        Defects(defects.iter().copied().collect())
    }

    /// Whether `defect` is switched on.
    pub(crate) fn has(&self, defect: Defect) -> bool {
        self.0.contains(&defect)
    }
}
