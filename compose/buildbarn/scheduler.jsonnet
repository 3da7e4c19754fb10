// bb_scheduler: the platform is read from Action.platform (BuildStream sends
// it on both Action and Command), the whole platform must equal a worker's,
// and an action no worker can take is answered, not queued for ever.
local common = import 'common.libsonnet';
{
  clientGrpcServers: [{ listenAddresses: [':8982'], authenticationPolicy: common.allow }],
  workerGrpcServers: [{ listenAddresses: [':8983'], authenticationPolicy: common.allow }],
  browserUrl: 'http://localhost:7984',
  contentAddressableStorage: common.storage,
  maximumMessageSizeBytes: common.maximumMessageSizeBytes,
  executeAuthorizer: common.allow,
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
  platformQueueWithNoWorkersTimeout: '60s',
}
