// bb_scheduler: the platform is read from Action.platform only
// (BuildStream sends it on both Action and Command) and must equal a
// worker's exactly. A platform no worker has is answered FAILED_PRECONDITION,
// except during platformQueueWithNoWorkersTimeout after the scheduler starts
// (UNAVAILABLE then, so that clients retry while workers connect): kept
// short, and waited out before the cluster counts as ready.
local common = import 'common.libsonnet';
{
  clientGrpcServers: [{ listenPaths: [common.listen.schedulerClients], authenticationPolicy: common.allow }],
  workerGrpcServers: [{ listenPaths: [common.listen.schedulerWorkers], authenticationPolicy: common.allow }],
  browserUrl: 'http://localhost:7984',
  contentAddressableStorage: { grpc: { client: { address: common.address(common.listen.storage) } } },
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  executeAuthorizer: common.allow,
  modifyDrainsAuthorizer: common.allow,
  killOperationsAuthorizer: common.allow,
  synchronizeAuthorizer: common.allow,
  actionRouter: {
    simple: {
      platformKeyExtractor: { action: {} },
      invocationKeyExtractors: [],
      // BuildStream sends no Action.timeout: the default applies.
      initialSizeClassAnalyzer: {
        defaultExecutionTimeout: '1800s',
        maximumExecutionTimeout: '7200s',
      },
    },
  },
  platformQueueWithNoWorkersTimeout: '2s',
}
