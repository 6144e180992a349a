"""The Helm chart against real helm and a real kube-apiserver."""
