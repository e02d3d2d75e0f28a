# bash completion for aeflow: verbs, their options, workflow (.lua) and
# state (.json) files, operation names for `call`.
_aeflow() {
  local cur prev verb
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  verb=${COMP_WORDS[1]}
  local verbs="run runs retry validate plan graph report orphans exec call operations serve logs help --version --help"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
    return
  fi
  case $prev in
    --format)
      case $verb in
        graph) COMPREPLY=($(compgen -W "dot mermaid svg png" -- "$cur")) ;;
        report) COMPREPLY=($(compgen -W "html md" -- "$cur")) ;;
      esac
      return ;;
    --on-cancel) COMPREPLY=($(compgen -W "stop leave" -- "$cur")); return ;;
    --state|--users|--tls-cert|--tls-key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -o|--output|--report) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --data|--app-root|--examples-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --stream) COMPREPLY=($(compgen -W "stdout stderr" -- "$cur")); return ;;
    --profile|--prune|--run|--param|--max-parallel|--poll-interval|--max-poll-interval|--submit-grace|--unreachable-timeout|--max-cores|--max-memory|--port|--host|--faults|--fault-kinds|--fault-seed|--token-ttl|--max-body|--max-connections|--request-timeout|--answer-cache)
      return ;;
  esac
  local opts=""
  case $verb in
    run) opts="--param --state --resume --json --max-parallel --on-cancel --poll-interval --max-poll-interval --submit-grace --unreachable-timeout --quiet --report --no-admission" ;;
    validate) opts="--param --json" ;;
    plan) opts="--param --json --max-cores --max-memory --online" ;;
    graph) opts="--format --param -o --json" ;;
    report) opts="-o --output --format --json" ;;
    orphans) opts="--state --stop --json" ;;
    logs) opts="--run --stream --follow --data --json" ;;
    operations) opts="--json" ;;
    serve) opts="--background --stop --json --host --port --data --app-root --allow-any-program --examples-dir --users --token-ttl --faults --fault-kinds --fault-seed --fault-ops --fault-delay --max-body --max-connections --request-timeout --answer-cache --tls-cert --tls-key --quota-cores --quota-memory --app-timeout --spark-master --deploy-mode --spark-submit --no-jupyter --no-list-changes --quiet" ;;
    runs) opts="--prune --json" ;;
    retry) opts="--state --json --quiet --report --poll-interval --max-poll-interval --submit-grace --unreachable-timeout --max-parallel --on-cancel --no-admission" ;;
    help) COMPREPLY=($(compgen -W "run runs retry validate plan graph report orphans exec call operations serve logs help" -- "$cur")); return ;;
    call)
      if [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "$(aeflow operations 2>/dev/null | awk '{print $1}')" -- "$cur"))
      else
        COMPREPLY=($(compgen -f -- "$cur"))
      fi
      return ;;
  esac
  if [[ $cur == -* ]]; then
    # Every verb also takes -h/--help and --profile NAME.
    COMPREPLY=($(compgen -W "$opts --profile -h --help" -- "$cur"))
    return
  fi
  case $verb in
    run|validate|plan|graph|exec) COMPREPLY=($(compgen -f -X '!*.lua' -- "$cur") $(compgen -d -- "$cur")) ;;
    report) COMPREPLY=($(compgen -f -X '!*.json' -- "$cur") $(compgen -d -- "$cur")) ;;
  esac
}
complete -o filenames -F _aeflow aeflow
