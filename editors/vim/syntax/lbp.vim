" Vim syntax for lbp policy files (.lbp).
" Install: copy editors/vim/ into ~/.vim/ (or add it to 'runtimepath').
if exists("b:current_syntax")
  finish
endif

syn keyword lbpItem       interface const set pool service filter route test
syn keyword lbpStatement  address mac mtu backend weight port health vip balance mode to unknown via dev
syn keyword lbpAction     accept drop reset local forward
syn keyword lbpAlgorithm  maglev round_robin least_load hash nat dsr
syn keyword lbpProto      tcp udp icmp icmpv6
syn keyword lbpFlag       syn ack fin rst psh urg type code ttl len on
syn keyword lbpBool       true false
syn keyword lbpInput      clients cpu mem exec_ms rps
syn keyword lbpOperator   in
syn match   lbpField      "\<\(in\|pkt\|eth\|ip\|tcp\|udp\|icmp\|l4\)\.[a-z]\+\>"
syn match   lbpNumber     "\<\d\+\(\.\d\+\)\?\(us\|ms\|s\|m\|h\)\?\>"
syn match   lbpNumber     "\<0x\x\+\>"
syn match   lbpAddress    "\<\d\{1,3}\(\.\d\{1,3}\)\{3}\(/\d\+\)\?"
syn match   lbpAddress    "\<\x*::\?\x*:[0-9a-fA-F:.]*\(/\d\+\)\?"
syn match   lbpOperator   "=>\|->\|&&\|||\|==\|!=\|<=\|>=\|\.\."
syn region  lbpString     start=+"+ skip=+\\"+ end=+"+ oneline
syn match   lbpComment    "#.*$"

hi def link lbpItem      Structure
hi def link lbpStatement Statement
hi def link lbpAction    Keyword
hi def link lbpAlgorithm Constant
hi def link lbpProto     Type
hi def link lbpFlag      Special
hi def link lbpBool      Boolean
hi def link lbpInput     Identifier
hi def link lbpField     Identifier
hi def link lbpNumber    Number
hi def link lbpAddress   Number
hi def link lbpOperator  Operator
hi def link lbpString    String
hi def link lbpComment   Comment

let b:current_syntax = "lbp"
