# bash completion for kes, installed as /usr/share/bash-completion/completions/kes.
# kes completes itself: run with COMP_LINE set, it prints the candidates one per line.
_kes() {
    local IFS=$'\n'
    COMPREPLY=($(COMP_LINE="${COMP_LINE:0:COMP_POINT}" COMP_POINT="$COMP_POINT" SHELL=bash \
        "${COMP_WORDS[0]}" 2>/dev/null))
}
complete -o default -F _kes kes
