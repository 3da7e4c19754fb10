// bb_storage: CAS and action cache in memory (a throwaway test cluster), one
// port for clients (8980, Execute forwarded to the scheduler) and one for
// the scheduler and worker (8981).
local common = import 'common.libsonnet';
local inMemory(blocks, blockSize) = {
  'local': {
    keyLocationMapInMemory: { entries: 1024 * 1024 },
    keyLocationMapMaximumGetAttempts: 8,
    keyLocationMapMaximumPutAttempts: 32,
    oldBlocks: 1,
    currentBlocks: blocks,
    newBlocks: 1,
    blocksInMemory: { blockSizeBytes: blockSize },
  },
};
{
  grpcServers: [{
    listenAddresses: [':8980', ':8981'],
    authenticationPolicy: common.allow,
  }],
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  contentAddressableStorage: {
    backend: inMemory(8, 256 * 1024 * 1024),
    getAuthorizer: common.allow,
    putAuthorizer: common.allow,
    findMissingAuthorizer: common.allow,
  },
  actionCache: {
    backend: inMemory(4, 16 * 1024 * 1024),
    getAuthorizer: common.allow,
    putAuthorizer: common.allow,
  },
  // The empty instance name, as BuildStream's default configuration uses.
  schedulers: { '': { endpoint: { address: 'scheduler:8982' } } },
  executeAuthorizer: common.allow,
}
