au BufRead,BufNewFile *.lbp setfiletype lbp
