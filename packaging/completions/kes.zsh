#compdef kes
# zsh completion for kes, installed as _kes in zsh's vendor completion directory.
# kes completes itself: run with COMP_LINE set, it prints the candidates one per line.
local line=${(j: :)words[1,CURRENT]}
local -a candidates
candidates=(${(f)"$(COMP_LINE=$line COMP_POINT=${#line} SHELL=zsh ${words[1]} 2>/dev/null)"})
if (( ${#candidates} )); then
    compadd -a candidates
else
    _files
fi
