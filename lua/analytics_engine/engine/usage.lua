--- `aeflow serve`'s usage text: one place for `aeflow serve --help`,
-- `aeflow help serve` and the engine's own option errors.
return [[
usage: aeflow serve [options]
       aeflow serve --stop [--data DIR]   stop a local engine started in the background
  --host H            address to bind (default 127.0.0.1)
  --port N            port (default 0: any free port)
  --data DIR          state, credentials and logs (default $XDG_DATA_HOME/analytics-engine/engine)
  --app-root DIR      where relative application paths resolve (default: the current directory)
  --examples-dir DIR  the stand-ins for the vendor's sample applications (default: workflows/apps)
  --users FILE        extra users: [{username, role, api_key_sha256 | password_sha256}]
  --token-ttl S       lifetime of issued tokens in seconds (default 3600)
  --faults RATE       inject faults into this fraction of /v4 requests (0..1)
  --fault-kinds K,..  429,500,503,reset,reset-after,delay (default: all)
  --fault-seed N      seed for the fault generator
  --fault-ops OP,..   inject faults only into these operations (default: every /v4 one)
  --fault-delay S     how long a `delay` fault stalls (default 2)
  --max-body BYTES    largest accepted request body (default 1048576)
  --tls-cert FILE --tls-key FILE   serve HTTPS (PEM files)
  --quota-cores N     the instance's cpu quota (default 16)
  --quota-memory SIZE the instance's memory quota (default 64Gi)
  --app-timeout S     stop applications that run longer (default: no limit;
                      per application: conf ae.local-engine.timeout)
  --spark-master URL  spark-submit's --master: spark://..., yarn, k8s://..., local[N]
  --deploy-mode MODE  spark-submit's --deploy-mode: client or cluster
  --spark-submit PATH the spark-submit to use (default: $SPARK_HOME/bin, then PATH)
  --no-jupyter        no Jupyter Server: the kernel endpoints answer 503
  --quiet             no per-request log lines
]]
