// Shared by the Buildbarn configs of compose/buildbarn.yml.
{
  // Everything reaches the one bb_storage.
  storage: { grpc: { address: 'storage:8981' } },
  maximumMessageSizeBytes: 16 * 1024 * 1024,
  allow: { allow: {} },
}
