// bb_storage: CAS and action cache in memory (a throwaway cluster) and the
// clients' frontend, which forwards Execute to bb_scheduler for every
// instance name.
local common = import 'common.libsonnet';
local inMemory(blocks, blockSize) = {
  'local': {
    keyLocationMapInMemory: { entries: 256 * 1024 },
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
    listenPaths: [common.listen.storage],
    listenAddresses: if common.public == '' then [] else [common.public],
    authenticationPolicy: common.allow,
  }],
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  contentAddressableStorage: {
    backend: inMemory(4, 64 * 1024 * 1024),
    getAuthorizer: common.allow,
    putAuthorizer: common.allow,
    findMissingAuthorizer: common.allow,
  },
  actionCache: {
    backend: inMemory(4, 4 * 1024 * 1024),
    getAuthorizer: common.allow,
    putAuthorizer: common.allow,
  },
  // The empty prefix: every instance name, BuildStream's default '' included.
  schedulers: { '': { endpoint: { address: common.address(common.listen.schedulerClients) } } },
  executeAuthorizer: common.allow,
}
