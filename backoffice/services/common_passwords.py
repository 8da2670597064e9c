"""Passwords that are guessed first: the most common ones of Chinese and international leaks
(CSDN, 163, 7k7k, RockYou and later lists: the ones of 8 characters and more, as shorter ones
are refused anyway), and common words and pinyin that are padded with digits or symbols
("Admin@123", "woaini1314", "Welcome2026!"). Lower case; see passwords.password_problem."""

from __future__ import annotations

COMMON_PASSWORDS = frozenset(
    """
    00000000 000000000 0000000000 11111111 111111111 1111111111 12121212 123123123 1231231234
    12312312 123321123 12341234 1234512345 123454321 12344321 1234567890 12345678910 123456123
    12345612345 123456654321 123456789 1234567890 123456789a 123456789abc 123456789q 1234567899
    12345678a 12345678q 123456aa 123456abc 123456qq 123654789 1234abcd 1234qwer 1234asdf 1234zxcv
    123abc123 123qweasd 123qweasdzxc 123qwe123 13131313 1314520520 13145200 131452000 1314woaini
    147147147 147258369 147852369 159357258 159753159 159753456 16888888 168168168 18888888
    19191919 1a2b3c4d 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y 1qaz2wsx 1qaz2wsx3edc 1qazxsw2 1qaz!qaz
    1qaz@wsx 1qaz1qaz 2wsx3edc 22222222 222222222 31415926 314159265 33333333 333333333
    44444444 520131400 5201314520 5201314a 5201314woaini 520520520 52013145 521521521
    55555555 555555555 56565656 654321654321 66666666 666666666 6666666666 741852963 77777777
    777777777 78787878 789456123 7894561230 87654321 88888888 888888888 8888888888 963852741
    98765432 987654321 9876543210 99999999 999999999 9999999999 a1234567 a12345678 a123456789
    a1b2c3d4 a1b2c3d4e5 a1s2d3f4 a5201314 aa123456 aa12345678 aaaaaaaa abc123456 abc12345678
    abc123456789 abcd1234 abcd12345 abcde12345 abcdefg1 abcdefgh aini1314 aini5201314 asd123456
    asdasdasd asdf1234 asdfasdf asdfghjk asdfghjkl asdfjkl; asdqwe123 baby1314 dearbook
    iloveyou iloveyou1 iloveyou2 iloveyou520 iloveyou1314 li123456 liu123456 qaz123456 qazwsx123
    qazwsxedc qazwsxedcrfv qq123123 qq123456 qq1234567 qq12345678 qq123456789 qq5201314 qqqqqqqq
    qwe123456 qwe123qwe qweasd123 qweasdzxc qweqweqwe qwer1234 qwert12345 qwerty12 qwerty123
    qwerty1234 qwertyui qwertyuiop qwertyuiop123 w123456789 wang123456 woaini123 woaini1314
    woaini520 woaini521 woaini5201314 woaini1234 woainima woainimama woainibaba woaiwojia
    woaiwoziji wo123456 xiaoming xiazhili z123456789 zhang123456 zxc123456 zxcvbnm1 zxcvbnm123
    zxcvbnma zz123456 zzzzzzzz 1qazxsw23edc zaq12wsx zaq1xsw2 !qaz2wsx !qaz@wsx q1w2e3r4
    q1w2e3r4t5 z1x2c3v4 a1s2d3f4g5 abcd@1234 abc@1234 abc@123456 admin@123 admin@1234 admin123
    admin1234 admin12345 admin123456 admin888 administrator p@ssw0rd p@ssword passw0rd password
    password1 password12 password123 password1234 password! password@123 pass1234 pass12345
    pass123456 passpass passport root1234 root123456 test1234 test12345 test123456 guest123
    changeme changeme1 letmein1 welcome1 welcome123 welcome@123 trustno1 football baseball
    basketball sunshine princess superman batman123 starwars whatever computer internet
    michael1 jennifer jordan23 dragon12 dragon123 monkey123 master123 shadow123 mustang1
    liverpool chelsea1 arsenal1 11qqaazz 1111aaaa aaaa1111 a1a1a1a1 a1111111 q1111111 qwer!@#$
    !@#$%^&* !@#$%^&*() 1234!@#$ 1234qwer!@#$ qaz!@#123 abc!@#123 P@55w0rd 88888888a 12345qwert
    asdf;lkj 7758521a 7758521521 77585210 woshishui iloveu1314 loveyou1314 1314love
    zhongguo123 china123 china1234 beijing123 shanghai123 wangyang123 huawei123 xiaomi123
    tencent123 baidu123 taobao123 qqqq1111 wwwwwwww zxczxczxc asdasd123 qweqwe123 zxczxc123
    123qwe!@# 1qaz2wsx! 1qaz2wsx@ 1q2w3e4r! sms123456 sms12345678 duanxin123
    """.lower().split()
)

# Words and pinyin that, with digits or symbols around them, are still guessed early.
COMMON_WORDS = frozenset(
    """
    password passwd passwort pass admin administrator root test guest user super superuser
    system manager login welcome letmein changeme secret default qwerty qwert iloveyou loveyou
    love lovely woaini woaiwojia woainima aini wode hello hellokitty dragon monkey master shadow
    sunshine princess football baseball basketball soccer superman batman michael jordan
    computer internet zhongguo china beijing shanghai shenzhen guangzhou chengdu hangzhou
    tianjin wuhan huawei xiaomi tencent baidu alibaba taobao wangyi duanxin yidong liantong
    dianxin woshishui nihao nihaoma xiaoming xiaohong wangwei zhangwei liwei wangfang
    oracle mysql server database company
    """.lower().split()
)
