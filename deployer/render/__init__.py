"""Manifests rendered from a kustomization or a Helm chart (issue 18).

- :mod:`.sources`: the one entry the rollout calls, :func:`~.sources.render_manifests`,
  for whichever input names the manifests (``manifests``, ``kustomize``, ``helm-chart``).
- :mod:`.kustomize`, :mod:`.helm`: the checks of the untrusted tree, and the renderers.
- :mod:`.capabilities`: the cluster's versions for ``helm template``.
- :mod:`.runner`: the box a renderer binary runs in.

Kept free of imports: the pipeline imports :func:`.helm.looks_secret` before anything
prints, and the Kubernetes client costs most of a second to import.
"""
