// bb_worker: a hardlinking build directory (no FUSE), one runner reached
// over a unix socket, the platform BuildStream asks for (properties sorted
// by name: ISA before OSFamily) and, with the chroot, the /dev nodes
// BuildStream's sandbox has, created in every input root.
local common = import 'common.libsonnet';
local storage = { grpc: { client: { address: common.address(common.listen.storage) } } };
{
  blobstore: { contentAddressableStorage: storage, actionCache: storage },
  browserUrl: 'http://localhost:7984',
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  scheduler: { address: common.address(common.listen.schedulerWorkers) },
  buildDirectories: [{
    native: {
      // Both must exist before bb_worker starts, on one filesystem.
      buildDirectoryPath: common.dir + '/build',
      cacheDirectoryPath: common.dir + '/cache',
      maximumCacheFileCount: 10000,
      maximumCacheSizeBytes: 1024 * 1024 * 1024,
      cacheReplacementPolicy: 'LEAST_RECENTLY_USED',
    },
    runners: [{
      endpoint: { address: common.address(common.listen.runner) },
      concurrency: common.jobs,
      platform: {
        properties: [
          { name: 'ISA', value: common.isa },
          { name: 'OSFamily', value: 'linux' },
        ],
      },
      inputRootCharacterDeviceNodes:
        if common.chroot then ['full', 'null', 'random', 'tty', 'urandom', 'zero'] else [],
      workerId: { worker: 'reapi-conformance-0' },
    }],
  }],
  inputDownloadConcurrency: 8,
  outputUploadConcurrency: 8,
}
