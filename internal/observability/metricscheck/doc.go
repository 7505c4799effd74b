// Package metricscheck holds the test that ties the alerts (config/prometheus) and the dashboard
// (config/grafana) to the metrics the manager, dispatcher and receiver really export. It lives
// apart from package observability so that observability's own tests do not depend on the
// components that use it.
package metricscheck
