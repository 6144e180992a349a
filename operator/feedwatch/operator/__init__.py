"""The Kubernetes operator: FeedWatcher custom resources -> watcher Deployments."""
