" Vim filetype plugin for lbp policies (.lbp): `#` comments (so that `gc` and
" `gq` know them), four-space indentation by brace depth, as `lbp fmt` lays
" policies out.
if exists('b:did_ftplugin')
  finish
endif
let b:did_ftplugin = 1

setlocal commentstring=#\ %s
setlocal comments=:#
setlocal formatoptions-=t formatoptions+=croql
setlocal expandtab shiftwidth=4 softtabstop=4
setlocal indentexpr=LbpIndent() indentkeys=0},0),!^F,o,O
setlocal autoindent nosmartindent nocindent

let b:undo_ftplugin = 'setlocal commentstring< comments< formatoptions< expandtab<'
      \ . ' shiftwidth< softtabstop< indentexpr< indentkeys< autoindent< smartindent< cindent<'

if exists('*LbpIndent')
  finish
endif

" The braces a line opens minus those it closes, outside strings and comments.
function! s:Balance(line) abort
  let line = substitute(a:line, '"\%([^"\\]\|\\.\)*"', '""', 'g')
  let line = substitute(line, '#.*$', '', '')
  return count(line, '{') + count(line, '(') + count(line, '[')
        \ - count(line, '}') - count(line, ')') - count(line, ']')
endfunction

" One level more after a line that leaves a brace open, one less on a line that
" starts with a closing one.
function! LbpIndent() abort
  let prev = prevnonblank(v:lnum - 1)
  if prev == 0
    return 0
  endif
  let ind = indent(prev)
  let prevline = getline(prev)
  let open = s:Balance(prevline)
  " A line that starts by closing a brace was already outdented.
  if prevline =~# '^\s*[})\]]'
    let open += 1
  endif
  if open > 0
    let ind += shiftwidth()
  endif
  if getline(v:lnum) =~# '^\s*[})\]]'
    let ind -= shiftwidth()
  endif
  return max([ind, 0])
endfunction
