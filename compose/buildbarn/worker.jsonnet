// bb_worker: a hardlinking build directory (no FUSE), one runner reached
// over a unix socket, the platform BuildStream asks for (properties sorted
// by name), and the /dev nodes BuildStream's sandbox has, created in every
// input root.
local common = import 'common.libsonnet';
{
  blobstore: { contentAddressableStorage: common.storage, actionCache: common.storage },
  browserUrl: 'http://localhost:7984',
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  scheduler: { address: 'scheduler:8983' },
  buildDirectories: [{
    native: {
      buildDirectoryPath: '/worker/build',
      cacheDirectoryPath: '/worker/cache',
      maximumCacheFileCount: 10000,
      maximumCacheSizeBytes: 1024 * 1024 * 1024,
      cacheReplacementPolicy: 'LEAST_RECENTLY_USED',
    },
    runners: [{
      endpoint: { address: 'unix:///worker/runner' },
      concurrency: 4,
      platform: {
        properties: [
          { name: 'ISA', value: 'x86-64' },
          { name: 'OSFamily', value: 'linux' },
        ],
      },
      inputRootCharacterDeviceNodes: ['full', 'null', 'random', 'tty', 'urandom', 'zero'],
      workerId: { worker: 'compose-0' },
    }],
  }],
  inputDownloadConcurrency: 8,
  outputUploadConcurrency: 8,
}
