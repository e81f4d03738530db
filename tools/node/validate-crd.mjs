// Validates Prometheus Operator resources (JSON documents, one per line on stdin)
// against the operator's CRD schemas, as @kubernetes-models/prometheus-operator
// generates them. Prints "ok <kind>/<name>" per document; exits 1 on the first error.
// Used by tests/deploy/test_k8s.py.
import { createInterface } from "node:readline";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = { PodMonitor, ServiceMonitor };
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const document = JSON.parse(line);
  const Model = MODELS[document.kind];
  if (!Model || document.apiVersion !== Model.apiVersion) {
    console.error(`unsupported: ${document.apiVersion} ${document.kind}`);
    process.exit(1);
  }
  try {
    new Model(document).validate();
  } catch (error) {
    console.error(`${document.kind}/${document.metadata.name}: ${error.message}`);
    process.exit(1);
  }
  console.log(`ok ${document.kind}/${document.metadata.name}`);
}
