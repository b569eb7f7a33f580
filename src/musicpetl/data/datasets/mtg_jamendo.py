"""MTG-Jamendo: auto-tagging, top-50 tags, the official split-0.

Layout of the dataset folder (data.root/mtg_jamendo, or `data.overrides.mtg_jamendo_dir`), the
paths of the MTG/mtg-jamendo-dataset repository plus the unpacked audio tars:

    data/splits/split-0/autotagging_top50tags-{train,validation,test}.tsv   32,136 / 10,888 / 11,356
    data/tags/top50.txt                                                      the 50 classes, in order
    audio/<NN>/<id>.mp3            raw_30s_audio-00..99.tar (508 GB), or with
    audio-low/<NN>/<id>.low.mp3    `mtg_jamendo_audio: audio-low`, the mono low-bitrate set (156 GB)

Each tar is downloaded (SHA-256 from the repository's data/download/raw_30s_<type>_sha256_tars.txt),
unpacked and deleted before the next batch, so the disk never holds much more than the audio.
Overrides: `mtg_jamendo_dir` (files already there: download nothing), `mtg_jamendo_audio`
("audio" | "audio-low"), `mtg_jamendo_base_url` (a mirror laid out like cdn.freesound.org/mtg-jamendo/:
`raw_30s/<type>/<tar>`), `mtg_jamendo_workers` (tars fetched at once, default 4).
"""
from __future__ import annotations

from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data import parsers
from musicpetl.data.dataset import Context, Dataset, SplitResult
from musicpetl.data.datasets.common import missing_error, remove_download, require_user_files, user_dir
from musicpetl.data.download import Source

NAME = "mtg_jamendo"
SPLITS = {"train": "train", "valid": "validation", "test": "test"}
MIRRORS = ("https://cdn.freesound.org/mtg-jamendo/",  # the repository's "mtg-fast" mirror
           "https://essentia.upf.edu/documentation/datasets/mtg-jamendo/")
AUDIO_TYPES = ("audio", "audio-low")

# MTG/mtg-jamendo-dataset at master (2024-07-09); checksums of the files at that commit
_REPO = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/1b4fa8c32e076c73b5175c1703ae805b4109309d/"
META_SOURCES = [
    Source("data/splits/split-0/autotagging_top50tags-train.tsv",
           (_REPO + "data/splits/split-0/autotagging_top50tags-train.tsv",),
           sha256="6dee445ddd1901286184c2059d3d5eef7486f083ae80de9011705f852a850dde", size=3742433),
    Source("data/splits/split-0/autotagging_top50tags-validation.tsv",
           (_REPO + "data/splits/split-0/autotagging_top50tags-validation.tsv",),
           sha256="4f5f0f0a7662f523b45727476f67d799d6e98151b2c585a8e94e19d980ad93c1", size=1368240),
    Source("data/splits/split-0/autotagging_top50tags-test.tsv",
           (_REPO + "data/splits/split-0/autotagging_top50tags-test.tsv",),
           sha256="3ede06a35e6cb27e1dbe8cfc84708a607622e30e5cd0a7199fce6c081124bc35", size=1349950),
    Source("data/tags/top50.txt", (_REPO + "data/tags/top50.txt",),
           sha256="b682c25c732a52e553b238f6dc71e0015333e03c50a5f73ca7d2e225b0bf1b44", size=923),
]

# <NN> <sha256 of raw_30s_audio-NN.tar> <sha256 of raw_30s_audio-low-NN.tar>, from the repository's
# data/download/raw_30s_audio_sha256_tars.txt and raw_30s_audio-low_sha256_tars.txt
_TAR_SHA256 = """
00 c569f4b7264995c06de93eb6c20138d9355274508dde37085ed992fc990d930b c89826f7fa271a1c6c8f3b63786462cd72a97ec02531ca2f566310418dace88b
01 1b079d27127462c9066ed2fa18490303850bc1041fcae55835be3a46d6c965b0 fc7155085f46f1a8b48553e2495b8aaa5bd3b0b1ef3a49b7ab9ad4b9f4e34a2e
02 699de4385be7c5b4ad804bf86608868fb2ccdb7cd827abf38cfbd4e8e7dbd0ad 7c0223bad1c47b4b62729d5fffc38f0537a3dcd93529276ade95d0627e8a84ec
03 426fc4c849f8d4aaa34e61c213a4f82db219b13d0b68210a4ccfd2da032af6dd 4c3be84de6a76c9e49e04c906bc913d363f19ee92954db419d5ca751f06dc879
04 d4188a23140670f6673794a8fb7060aefd97067764ec84db5676847eaa08b668 ac6064fa8cbb8c271ba9993ef0bff193aeec17d41db66e9df30884afc0cb90ef
05 075c75bd81c0060f5df7a224353c4ac392a8453a4df8b8fc2ffd45216ce4cf5a 7e261bc8b78f2630073574f8e0655bd05effe6683c51d1762d1474972a17967d
06 0a57bc905c2d17d2c6f129b66708e05c03a14052972a44a3696839df9a5f0d49 660949956e904521c51317e2dab02a8c6d6041f0318e6ae624d8b36cc69fc490
07 21f9aa2b3bcd1035eda53ec2d56e4dec778815b9ed9843d1c83204134bb64f90 e50dc5bfe2f747da9969344268215bc7b8d6cb9d770f09767f1359c89fcdbcd4
08 a86356a7e8c3ad146d1e3e2179a434bb2e0b2084ecc0796f014f176ac5aead90 a92bde61d2331c5f7a4a3fc3e66e47349138d2bbc5ea872786f4eb747fbe4a9b
09 3aaeaddfc46bb85ac87bf21adc348d4d12df1764589621fb2398f08215af5530 1adb4d9c10866f9f954f02c82e6ecb71a61fbbbc1c96927fbc94ee6911df1ed9
10 05859d9181455b81debaadf94712be66c0019903bafb4eb5451d328a951d4a6a 297b350fc9eb73899a0ad968aa19d715ee409dd57fa53f9a250627ebd779702f
11 bc4e571ad56f81436d7e6fd960900a503634077cc18722711061a76325c15545 c5b5474262b00026d46f2efa037e0ddd7f2c36e1bc37017f623d2cb74644af04
12 43676086cf4c490329d017ebb2e0f2bbf4a3226e5803a40f8b212a65da632aae b08bc284b8f8981c8fa5f044a57ecbb4b2a75e4ec41a4bea4fb4954d5f26ed00
13 40eb29a4856b5159a5ce44de026c3ab99d01e232699274afc73e83dca90a8df7 da5912cb74dd4eb37aa58d73c65084335934b8ab30394b1139a1b7e493eee3a8
14 46fa140df4d0a87c3002c51fdb032aef57e24e87c8ebb5fc046e4e27fd9dddcd 774c883316eed51680d8e657e7b33500b16bb2269634415fcefa1d067c85014d
15 e4706a014cb1c89520edebc12b9e6408a64591b3d13d79d5888f2337dfb45175 a44ad1c5a71c315f046d0b4d95b522135ab11fe16a56e87fd49830ddd33a27c2
16 d7a9ce5ca3781cfae38c418a00571157a2dbe3f40db51b475270b4ff04802c20 1af8fc7ed01eec6fa713a145cb05040543c6b3fdf774504cc44fdce3eca72bb5
17 2fc011796b52f617ea72819aa0668fcf53ee7faf28fc4e9a58a33a78ed91ebc0 b4bd7d593e0d25c21df959d706197a9766fdc136c7c53ee487ae95872b32eae0
18 3d594886b97398194198fe2290143f7ee7fc12906f4065345c2f821d468bf085 7d364bf547b96719ddfbd3bc187519b3c103bc78c123a9afdc28b9d5550c8ad6
19 9ee545bf2a9eda4623d401c77ae3cbcb437b362373be37ffec070fafcb7a9abc a9c651daf80b5a9481874aa5047e21f4758ba33e4138c39aac478f0a2a82950a
20 03e43bedbb51a8cdac9f21ffd7cbf04d06e8a0e1d47382a6c6a91cb6d124a735 4f2e88916c5216bf5b88ac71b89607cfc17c2b3b85383cade862309401fc6b36
21 95ac4920c64685cdc381bf3421e843a1af639cc8da124253f0a01f7a82cd67ed 8aface9026c59624e13a16af97a278ccf1a29cfccd920705a4bdf1ee1651a61c
22 332b3117e7bea3866807be52db52776beb3ded026952e112f9ef8717aaf7c66b 38bd0373c3496fd5be9d0931b20b92b9ad345f6e22f8da0799e3f311a1e91cd0
23 a10feecbe6f629c672d09c4870b7c9597bed1c786076d9bab77d9af876aba93c d3c7fa8cb5e7c6e941b84b79073cbdb63a7d3e252b9f2fe32e025bc35dae7d3e
24 7713300cdba4b8e7dccdff7cd42824c8f1378781b122e64f24fa6107243b0a96 fdbbad01c4eb1a6cdd5658e67fcd99ed6e4f5e40e19161c9f3805948abc232c1
25 fd86b7ca868bf605082ba65a11a3f8f4158dc15b336a5109051744e9ee5cd4fe 79ebc76851ffb2b392e1631e526d9c561e016322ad6050577b4ea6b29e240244
26 9799b3f538aebc1aaa3b929b0dfb417e5822f8bb85a98e2e669c1ad3824e83be 3a56aed567a07923760de1bb0b9219de62e2471e19d4a8a56296b9a331df701f
27 ce705a789bee6f048bc6de5b4d0329d8b995c1f92edccd2085d3ccb98e605c38 dfcbca114a0b9aba59842d815c8db634a0f8bb58303a0a1c6280ecdad1840a10
28 5a4312b86c205435072d76d96f7aec8453fc52b2f4d5745f6a892c2432cb2b10 c8cfeacf927c8e77f189ddc58ff1764773c917fc4b752409394d89343c3cf56b
29 bd7cd4c7fd920d3a08923f10f25127b961a6dd41312521b14afcf80f9e21daeb 0f6dce0526bac6ce4d4b452980a03fcf7ab486d7d31290041463eb0617a652c3
30 95be758ed959f873fd3d8e67df082c6eb7f54b773553da1a4395920118ee4c19 3d2160555657262b2404b8a5679c015726dd1a5709f11b37c903d119592487cb
31 f0fe6a2dc0f340bbddc835587a17667fa13409f277951b2f1497d91c52b1f025 66297887de56cee156549355fdd8c30d62eb0a5bd4ca21bf5490132f0522c3f3
32 903816b54da42ad3894454386d96669c181063841d6999ea1aef629928322925 5d54b4204c84db3e56f49a673a291e2fa12d9ae6912361496e0eecfd7a3458eb
33 80b60b8a28a4b98c514a6a63ad2bf0cbd5f025fd5aeb3e8862070efa718b2614 3071d45998515466902e5098d74061d732f219e5cec34321ceb91c36d7cfd2bc
34 818da3de9dd52938c762068acae61044ac92ae80ce2ba6620bda37829527d59a e7495b017e4b90b9c4cde19f9871c92be55663c632a754376e2c25b97e80dc33
35 385eb2dc399db8d71bc5cfedafa060050b7aa49baebde152a31b562f9639e764 d659866075d5c8273c2938e773c0e49c839d77f83f103060521735fcb85b10af
36 cceabeda37702127f313e8adb2785d32e186b1a1e6d446eb6939ad7d66cfde50 dcfec56168814efcd3322506861b548ba2b0b932ede973a3e004452fdb867f0c
37 753aa1745fe959a003dad070ecb32ea81aa990eca1a159f9ef9969b48cca87ef b1310adbd8e4f8ff9405bb52061f5727612098f7495b5ff05521c06653aee7e6
38 4bf96639c7eae1e99d9ab975b62850c88b746dc9cf1f643297b5d6f0cd5dc106 ba8919996d14dd42e2de7fb1cb4bd775e94b65497305609e722b9d3444a8c47b
39 7c0adb5c7f00f5847e3bd395fdb00d4576ac62a46e9cd69fa48efa891518562c 7a81ccff61b37029d71051aea722860a3321756bf0afbf438198bfc8f7fc4e6a
40 b8803c01b804a10f4184471bc9bcbffc7183492e0aef56756b00a26ed5ad55dd 8baa5a068b900dc2c15c22ffdd084fbc9914da89bd05e0791a9d57c7244416e1
41 1ebe787d549935ea6651d892942c83c0730d7a180e79298fa84b6860d432c219 711ae43e6f051e05f10ecec1499fe4f7ec3789caa642b1de114589e50726352c
42 29a2ee0f8de47cf9d663dab323a030344697a125e519395ff8562db6e2ce0e85 25a8375e7533dbccf9452c62f2241f954594046704c02ee8c9a987f287331207
43 4134c2ec57a79e4fea1ba1490130bcabd7e42b4fa1d7fe9839d04459b49a9c40 eaddee8cbd2aad56e86bc929d6d706692bf4fc29beb10af0233023fe6a67ceaa
44 0c4a7c7d2128c3c5cb0947e50840f8d9476c574b4a7fba9b21781db45af6a867 4b4abe3ecdfb3e089fc68b78182af5ac4a653263620f357d350d0010d10a09ba
45 3cfb162cc5d236330b4beb92201cbb716dc3f1db741bd96d12fa3814ec5a2286 59a2fd66bfca08b92c67030e28738179f1f9d8bcb216f73491bf9e40ba8de5b8
46 6c83dd76a4717d0ad992f503eafd03347c7842185e1713663d72a166704cbad5 2d8c44e41ab2de003a49f444a217c8e3ecf700eed42a1ea11dd94a5c30beb091
47 cedd12c636e1127419c240af35006e3aeed988b6b48a740b975b0744e29ebc0d 4f257b4e4f587fd0367dbeb8835d0ad7a4885d0b713467263da118a25d58abd3
48 3aeadc6da4d8cdec237ddb4a1f09d146b765dac35576120f81ae8f0fdd73ab70 99dcb4b26f53467efb34e875fe016baa8b38c68e399f5e3dea862362adc65103
49 744c7d8a0d5648a0bfc5f2ed128c262da3be6cf8f5fba0c4f5f23daf039e2b07 95f77b52515a981a4810570eec208a0d96a24a33b6843edbd5f31dc2828c8a51
50 7c94f06d28b1b42ab34ce99dfcd24239d667bd18f31d583c1f7faa0c039ff653 a05839580bbf82d88b4d5c33b2d7001a61018c8cf83027322963002061e62d43
51 797c1a3f1f51b97615748992130e1b8c359ea09011bcddffeb167cf17bb1d406 929e4b087c4387e31bbd987fe3ad29c61736229c54672b5be3904890c9ae6c90
52 bc1a57511d08d3cd5418f38a411715232898b858be9bf66eb6b1432955f519b6 c5c6a539d5b455013e28442b7f6162e654fb469e66588f2bb41117a9f874298e
53 94f9be37c55edf7a621b27f0e9ef336f1b4cd28bd28a7d001bb084fafc71fe7c 9913b3105212b75f4779b375c6659da98f54f31dbf526fc8a8191ad9be027f54
54 93364e4991d09fde4be5e4d0b401a326bd02bfe807bd1ea1fac5bd5b5d579429 d05c72f694b4e046de404b602426d18fd476ac32f10513775d74698fa3f685d9
55 a369841a22d1a4749ea4a52769fa99200524c4f886b0c03caeea460a198bcc57 8b3a31c911775dce324959af41a86a0610e14dfe37e4f1557dc95b5d69c8f424
56 a8fb0a0d6e5112f02167453a5fb2dbc6715eb47d4a34957205efb304183ea53a c196ef7d334509628b8422a2d1050de7a498b7220605d6f4890dc41413b0bbf3
57 68e080cc94565e2d77783df7991691c50b8b848427cebcdfbd5ae02a44f7e17b f45ddf7423da8074bb58879c5608cc1ef7854b87569abf86dcece8c61ab689a3
58 c178d1e8ec19a3e199aee91058124798a1562608e0a37b266b1ad3ffbbbbcb6b d7718bef29edba1c0f6c384575ece997940064f2c6c4c93509a2bcbec97d81d5
59 0378d752b5ebc7d7c1241a25265ba670574d9a3af2511bcf28fcc7598a73af24 d13d3fbc17a2926f525a0140e401b4d5851da422288a3f0ae7990cede43932bc
60 096eb0533ac6d27a92245826d6f3613ee2160afb5d826ca1385f2928d39da2a8 e476239126f64fc130d9145b75a370322468198dde53b7391e26d177a3d57ae7
61 6a346f88ab9562b43f9a4479f21858c4e3a6c99b6129decce9d8f34cff3cd2d6 fed1a3b7c77bbbe89b00553080ac188027f9b0be7e82dbeb09e7661ba9d8605c
62 0ab29b6f64802f15433a5bae2def0bc921d3204ff708499542cccfc219542d6c fd51d08587db9ca87686ab898ec1892be8f68e524035744b4fb59d1aa9550578
63 0876e6712c0b0f23c9b38092ba7d4214beaf0ba2ff2d17e0cad6beb87a46cdba fb11d19c1e385c9af6cd9d13742b3c59e4e89bfe0622dead26672930f508bd72
64 45d5c55a9beaf7c88e56497458ae4b6775b1f5c2180602d49dfddfbb48447328 028330f312aed58c67d8506733ab541ce5f584bbe6500132d3b636ea883f6b7c
65 8722dff73ff4ad3d23085e756d0359f2ec99eb1077f9824d5f511543bbcb217d 294248bb2df8d54f194fe3b925aaee453b2e513731b579bef2e35ab6e9fb4d17
66 f5da3baabbd31597b1e515e4d25f40ae351933eed3483c917de385be8aa18f95 fb9ea10176ab2a0954aa45807062ace4f0149d168e92b43682149e9f39c08efc
67 1c2d8edb77f6985ff2e320d6f6146e717563d22ab7b4b59eae262ca7da756445 56c0f8b00f0dfed2700a1a531f009532345c6cc5535882b6b583d801b15659db
68 96aecac761d72007d8f294edf74daefe02be975b0a2062cd3e3d537b139b5091 8d227b991255e4492cdd8670fe79fc748f05e7ac3878be1e27cf3b43d7de6f82
69 8ce71e37cd9aff612679765601e2cc912c1b94e2d02f60ecf288118f4abfefae 77e0fd64b51ed5407474d7a29512533229d9aef15c584f6c2418f2a5016d1031
70 c8c02d756702196233ae3516759a0d32c254fbd74265b1687c7672f6b4f4f0b3 c9c741a113bca8fc5cdacaafb8978470723a51e063a2c9b63e06b1ec80e776da
71 998b34ec057db649e7d0aa37427a80af8b81e1a6c306545ddd0ac45f7a05e293 f63516f5467849506d5d082f053d4c36a31b0aa324f40a9cc96d73776400d54e
72 eb1f561e69737d3352053903fcbe7d06ee810af51dbff9b2bfd492ebe66f92d7 10527f88b7df4983416ddbce0ddd11beb8d0480861bc4c8180610262cadc755b
73 7e6cbc51273af7cbd78ff4fab68168acc88ce24536fdb49f35f36c562f8b3573 4cc4a5afed08eec5390b971a3106c5c3740558f01ffc78633fc8d7dafcb867af
74 527e80083ba88db2ff1347b20e1b3d1ea67f68a8b93a66ba669f345ddb9403b6 b05fb3a8523b0bc33ef687a8d7ec1fca746bdcaa1abb46419bbbb8110f224e89
75 7ec8950f15bdbf95df3b9f2b387c93151b8d3027aef82e6c59ffe1513db77801 b504901cb7f337b54348569038761d3e000bc7112b1b497cf5afb0f73f8b9fed
76 4524289ddd68b80843dae2d1be558d34128154dfb89302a9b228176c7ec6f705 2c16296464d79d7507ea787e9e7f7e6dfe0d5d736e54c20b97f8d31d18cee327
77 cb383b88915e25f4b43a1b35c8f93ed0539678a494347128db34416a08933ca7 de4004685048bad0874f883be6abfc88154840ad313aa735596f3b66c7e01948
78 c88974edeea81a4bd82ace067eb44275acef9451dbdcaa05b5a718b467c7061a 709f4731a718c2871ed68851f261ac8d1ea0de4f08fd595174690821fe7f36cb
79 672a9bdc6b184d04edec56b6f5bcdc8778d3f659832dfbf505a03f9551e5a1d0 4e871fbbe05ea1adc8e0a28a91129bfd3d84c728d5c839bb4a166882b5e9088a
80 b67aa4efb090d3d59c607b87eb667e7d3b9280e8d8d771a9c99e5e75d6ca13b7 c9f4149d013da9bc13c4b1e6ac25f5008db053b6945998f8fa85592c68f40740
81 446a1b9d77a733831fbec40e84cded1f6e733b3db80fb685873cc6fd5c36946e 5625f2b073c81cc1f20965bf542c6c3f667cf01bc9f096af7830c7a0905826f3
82 12e8417f93a23361bd9f66fd106c044132e8c1c22fb4fea258ffa1e61430d0cf b594ccf7b82e1b293e007e3826f9577dcca22fa8d360acbb12417bb4d01a5139
83 52882df6e996945563b685269bd62d99407cd9a552d8fcc1b9eff27eb9ddfd47 c7688e8d09f6ba2c16c46d30d99f767b6ad281d40855e06e8e89f527bb11407b
84 6f0120a1d1593c15c2ad55b77bf24f13701f4b67a6aa8a3c1f20f75457eaf644 0285bcb5007cea60a9014b72651f1a7cad912d737fefddf1419bba3d3e8670ad
85 d3d236fba2c14a1e77eb3a5e2d1bec1ba378b393331f9ee6f49333da15eff042 64c48b77faefed268a9213f8e7e3087836ba57a859c9b4ca9a242d9277991599
86 21bc3ba1780a93986c8133f0204cabf989e4dd181de3c0cfecc2e51246275c89 9fda026a125fb878fc20e23ba543d6d16084d842fbcd5c68f53e6196796e8da8
87 d25bb221683528091442cde3701e0bb7191bb3af91ae081f14cd7da7b276cb49 3a661c17e67a71a5361e6d1852257f18fc54d24ce5d2edc6e6a4618acb79a0c8
88 4f63446800bd31db4afcce9e8524d28a3c9c1319ba66c145c3950666b4581d6f 3484251fd49cc6327a13230c7fd29360d30a29b085653a21fb5aab9cc992063e
89 84e49b2a8c599fa3f1dc3e4ffff1c44e373423fa59ad272f70817ad86d31a88b 9fb821ca304579d2338231ff29e5e0704584c7e9035dc62252c87ce287e20d50
90 0b0fdd696ffa9ff99f0f52a7955e8c4e9597e02cc41d8f3c64ce322064eb2906 627bb3df0b8ac4134492a58bbddc403a7ede7f2e0c4ca8141243c7611db29f26
91 09355b2df20dc7ed4f42e56c661fddab2ad2b0fffa07b8845e4cfb76288b922f e0af7b41713900210deae4c10618929f7707d5f42095f498e763353e64a32b62
92 78aa8e982db08b75b69f9408e8532403c95aef76e4dcf7bb77d49787af7aaf80 e14bf2c0ee993998eb0494d65b62c00d4e2aa9d3c691e7e6bb604cd24b98eeb2
93 34f0fb94aa148f362b0a9c1d15bc20c2f882a3ec8c3f3c242ec45c1c9d4a9b0b 27ac303f084ea53eb9dcb0d1376cfe033ac545a154495bce50062a8c47612a3e
94 6973db448d19e2dc500ffb2a5c5d85aa283c79f12c8fa8375c8531bb8dde5118 d91c423867671569fb11220eb45cea100b3a88e83ad48ac8f9e58ff194c07bda
95 05d66890d7a1ac12e15fe1a113e89c3ee84ce43da5f8e20152cff73b33b7d43c fe9cb7d0ef5256970e0b546c9d457c6dc6ebe9aa5ab36341d836709bdc7da411
96 502943157837338fa5b51db0007ec2f53a4400c89207876e422a1bde8362cf5f 7f267cca0cea3ae866dccb34242ffc335a236408e61856e64d325a0a5cd2b321
97 9ffff2d10da9170434d5bfaf1f4f222f4bb3fc9b939777fd2b0fc31b5b7de55a 9e94ae7b0bd1f43adfd7dc84fbb9dfa2b34bd124872447821bf323f27a4e4960
98 53f8f1c48627fb72465ceedf47802174d4f2a1e736152b2fe6e26d89f0ad101c 4e202fa89c0c3d0f9dc003850089d6cd624d93e2c41b25d6c465feab44a0ae93
99 261eb1243b73c57e10f539cdc05eeed91a9e367cc4050f9eb62ce8d50a1738bd abeecf42e390950e2d4a280ede67a86df3dc3df41b02c9c518e0d83da5f49701
"""
TAR_SHA256 = {t: {} for t in AUDIO_TYPES}
for _line in _TAR_SHA256.split("\n"):
    if _line.strip():
        _nn, _full, _low = _line.split()
        TAR_SHA256["audio"][f"raw_30s_audio-{_nn}.tar"] = _full
        TAR_SHA256["audio-low"][f"raw_30s_audio-low-{_nn}.tar"] = _low


def audio_sources(audio_type: str = "audio", base_url: str | None = None) -> list[Source]:
    """The 100 tars of one audio type, each with its mirrors and SHA-256."""
    bases = (base_url.rstrip("/") + "/",) if base_url else MIRRORS
    return [Source(name, tuple(f"{b}raw_30s/{audio_type}/{name}" for b in bases), sha256=sha)
            for name, sha in sorted(TAR_SHA256[audio_type].items())]


def _audio_type(ctx: Context) -> str:
    t = str((ctx.overrides or {}).get("mtg_jamendo_audio", "audio"))
    if t not in AUDIO_TYPES:
        raise ValueError(f"mtg_jamendo_audio must be one of {AUDIO_TYPES}, got {t!r}")
    return t


def _missing_metadata(folder: Path) -> list[str]:
    return [f"{s.name} (from github.com/MTG/mtg-jamendo-dataset)" for s in META_SOURCES
            if not (folder / s.name).is_file()]


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    audio_type = _audio_type(ctx)
    audio_dir = folder / audio_type
    if user_dir(ctx, NAME):
        missing = _missing_metadata(folder)
        if not audio_dir.is_dir() or not any(p.is_dir() for p in audio_dir.iterdir()):
            missing.append(f"{audio_type}/<NN>/<id>{'.low' if audio_type == 'audio-low' else ''}.mp3 "
                           "(the unpacked raw_30s tars; none found)")
        require_user_files(NAME, folder, missing)
        return
    folder.mkdir(parents=True, exist_ok=True)
    dl.fetch_all(META_SOURCES, folder, progress=ctx.progress)
    # a tar is done once download.extract has written its marker; then the tar itself is gone
    todo = [s for s in audio_sources(audio_type, over.get("mtg_jamendo_base_url"))
            if not (audio_dir / f".extracted-{s.name}").is_file()]
    workers = max(1, int(over.get("mtg_jamendo_workers", 4)))
    downloads = folder / "downloads"
    for i in range(0, len(todo), workers):
        batch = todo[i:i + workers]
        for tar in dl.fetch_all(batch, downloads, progress=ctx.progress, workers=workers):
            dl.extract(tar, audio_dir, progress=ctx.progress)
            remove_download(tar)


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    folder = DATASET.folder(root, ctx)
    missing = _missing_metadata(folder)
    if missing:
        raise missing_error(NAME, folder, missing, "Run the download stage first.")
    audio_type = _audio_type(ctx)
    classes = parsers.parse_tag_list(parsers.read_text(folder / "data" / "tags" / "top50.txt"))
    index = {t: i for i, t in enumerate(classes)}
    rows, dropped = [], []
    for split, file_split in SPLITS.items():
        path = folder / "data" / "splits" / "split-0" / f"autotagging_top50tags-{file_split}.tsv"
        for rec in parsers.read_mtg_tsv(path):
            unknown = [t for t in rec["tags"] if t not in index]
            if unknown:
                raise ValueError(f"{path}: {rec['track_id']} has tags outside data/tags/top50.txt: {unknown}")
            audio = folder / audio_type / parsers.mtg_audio_path(rec["path"], audio_type == "audio-low")
            if not audio.is_file():
                dropped.append({"key": rec["track_id"], "reason": "audio missing"})
                continue
            rows.append({"key": rec["track_id"], "split": split, "audio_path": str(audio),
                         "label": sorted(index[t] for t in rec["tags"])})
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("tagging",),
                  "MTG-Jamendo raw_30s, top-50 tags, split-0 (32,136 / 10,888 / 11,356 tracks)", fetch, build)
